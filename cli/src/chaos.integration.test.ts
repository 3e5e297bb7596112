// Never lose, never duplicate, never reorder, under faults: three users on five devices exchange 1,000
// direct and group messages across both edges and both cells while a worker and then an edge are killed
// with SIGKILL, and one device stays offline and resumes at the end. The history checker then looks at
// every send, ack, delivery and the cells' databases, and must find nothing.
import { afterAll, beforeAll, expect, it, onTestFailed } from "vitest";
import { WebSocket } from "ws";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { CellwireClient, CellwireClientError } from "@cellwire/client";
import { DirectoryClient } from "@cellwire/cluster";
import { defaultDevKeyDirectory, signDevToken } from "@cellwire/edge/dev-keys";
import { checkHistory, dumpCellDatabases, type HistoryRecord } from "@cellwire/loadtest";
import { startTestTopology, testServices, type TestTopology } from "./test-topology.ts";

const messagesTotal = 1000;
const workerKilledAfterAcks = 250;
const edgeKilledAfterAcks = 600;
const offlineAfterAcks = 100;
/** A send the SDK gave up on is retried by the test with the same clientMessageId, as an app would. */
const sendAttemptsMax = 5;

let test: TestTopology;
let nats: NatsConnection;
const record: HistoryRecord = { sends: [], acks: [], deliveries: [], database: { messages: [], members: [], mailboxes: [] }, expectComplete: true };
const clients: CellwireClient[] = [];

type Device = { readonly userId: string; readonly deviceId: string; readonly client: CellwireClient; lastSeq(): number; untilSeq(seq: number, deadlineMs: number): Promise<void> };

function edgeUrls(first: number): string[] {
  const urls = test.topology.edges.map((edge) => edge.webSocketUrl);
  return [...urls.slice(first), ...urls.slice(0, first)];
}

async function openDevice(userId: string, deviceId: string, firstEdge: number, resumeAfterSeq?: number): Promise<Device> {
  const client = new CellwireClient({
    url: edgeUrls(firstEdge),
    deviceId,
    WebSocket,
    tokenProvider: () => signDevToken(defaultDevKeyDirectory, userId, { deviceId }),
    requestTimeoutMs: 30_000,
    ...(resumeAfterSeq === undefined ? {} : { resumeAfterSeq }),
  });
  clients.push(client);
  let delivered = record.deliveries.find((entry) => entry.userId === userId && entry.deviceId === deviceId);
  if (delivered === undefined) {
    delivered = { userId, deviceId, events: [], ...(resumeAfterSeq === undefined ? {} : { startAfterSeq: resumeAfterSeq }) };
    record.deliveries.push(delivered);
  }
  const sink = delivered;
  let lastSeq = resumeAfterSeq ?? 0;
  const waiters = new Set<() => void>();
  client.on("event", ({ seq, event }) => {
    lastSeq = seq;
    if (event.kind === "message") sink.events.push({ seq, message: event.message });
    for (const waiter of [...waiters]) waiter();
  });
  client.on("synced", ({ seq }) => {
    lastSeq = Math.max(lastSeq, seq);
    for (const waiter of [...waiters]) waiter();
  });
  const synced = client.whenSynced();
  await client.connect();
  await synced;
  return {
    userId,
    deviceId,
    client,
    lastSeq: () => lastSeq,
    untilSeq: (seq, deadlineMs) =>
      new Promise((resolve, reject) => {
        const check = (): void => {
          if (lastSeq < seq) return;
          clearTimeout(timer);
          waiters.delete(check);
          resolve();
        };
        const timer = setTimeout(() => {
          waiters.delete(check);
          reject(new Error(`${userId}/${deviceId} reached mailbox seq ${lastSeq}, not ${seq}`));
        }, deadlineMs);
        waiters.add(check);
        check();
      }),
  };
}

beforeAll(async () => {
  test = await startTestTopology({ label: "chaos" });
  nats = await connect({ servers: [...testServices.natsServers] });
  const directory = new DirectoryClient(nats, test.namespace, 5000);
  for (const [userId, cellId] of [
    ["alice", "a"],
    ["bob", "b"],
    ["carol", "a"],
  ] as const) {
    await directory.assignUser(userId, cellId);
  }
});

afterAll(async () => {
  for (const client of clients) client.close();
  await nats?.close();
  await test?.destroy();
});

it("loses, doubles and reorders nothing across a worker kill, an edge kill and an offline device", async () => {
  onTestFailed(() => {
    process.stdout.write(`${test.output.filter((line) => / (warn|error) /.test(line)).slice(-80).join("\n")}\n`);
  });
  const alicePhone = await openDevice("alice", "phone", 0);
  const aliceLaptop = await openDevice("alice", "laptop", 1);
  const bobPhone = await openDevice("bob", "phone", 1);
  let bobTablet = await openDevice("bob", "tablet", 0, 0);
  const carolPhone = await openDevice("carol", "phone", 0);

  const aliceBob = await alicePhone.client.openDirect("bob");
  const bobCarol = await bobPhone.client.openDirect("carol");
  const group = await carolPhone.client.createGroup("everyone", ["alice", "bob"]);
  const membersOf = new Map<string, readonly string[]>([
    [aliceBob.conversationId, aliceBob.memberUserIds],
    [bobCarol.conversationId, bobCarol.memberUserIds],
    [group.conversationId, group.memberUserIds],
  ]);
  const conversationsOf = (userId: string): string[] => [...membersOf].filter(([, members]) => members.includes(userId)).map(([id]) => id);

  const faults: string[] = [];
  const killed: Promise<number | null>[] = [];
  let acked = 0;
  let retriesAfterFailure = 0;
  let tabletOffline = false;
  const afterAck = (): void => {
    acked++;
    if (acked === workerKilledAfterAcks) {
      faults.push("SIGKILL cellwire-worker-a-1");
      killed.push(test.topology.signal("cellwire-worker-a-1", "SIGKILL"));
    }
    if (acked === edgeKilledAfterAcks) {
      faults.push("SIGKILL cellwire-edge-1");
      killed.push(test.topology.signal("cellwire-edge-1", "SIGKILL"));
    }
  };

  const senders = [alicePhone, aliceLaptop, bobPhone, carolPhone, bobTablet];
  const perSender = messagesTotal / senders.length;
  const startedAt = performance.now();
  await Promise.all(
    senders.map(async (sender, senderIndex) => {
      const conversations = conversationsOf(sender.userId);
      for (let index = 0; index < perSender; index++) {
        // The tablet goes offline between two of its own sends and hands the rest of its share to bob's phone.
        if (sender === bobTablet && !tabletOffline && acked >= offlineAfterAcks) {
          bobTablet.client.close();
          tabletOffline = true;
          faults.push(`bob/tablet offline at mailbox seq ${bobTablet.lastSeq()}`);
        }
        const from = sender === bobTablet && tabletOffline ? bobPhone : sender;
        const conversationId = conversations[index % conversations.length] ?? "";
        const clientMessageId = `${sender.userId}-${sender.deviceId}-${index}`;
        const body = `message ${index} from ${sender.userId}/${sender.deviceId}`;
        record.sends.push({ senderUserId: from.userId, senderDeviceId: from.deviceId, conversationId, clientMessageId, body });
        for (let attempt = 1; ; attempt++) {
          try {
            const ack = await from.client.send(conversationId, body, { clientMessageId });
            record.acks.push({ senderUserId: from.userId, conversationId, clientMessageId, messageId: ack.messageId, seq: ack.seq });
            break;
          } catch (error) {
            if (!(error instanceof CellwireClientError) || !error.retryable || attempt >= sendAttemptsMax) {
              throw new Error(`sender ${senderIndex} gave up on ${clientMessageId}: ${String(error)}`, { cause: error });
            }
            retriesAfterFailure++;
          }
        }
        afterAck();
      }
    }),
  );
  const sendingMs = performance.now() - startedAt;

  // The offline device comes back (to whichever edge is alive) and must catch up with everything.
  const resumeStartedAt = performance.now();
  bobTablet = await openDevice("bob", "tablet", 1, bobTablet.lastSeq());
  const resumeMs = performance.now() - resumeStartedAt;

  const mailboxLength = (userId: string): number => record.acks.filter((ack) => membersOf.get(ack.conversationId)?.includes(userId) === true).length;
  await Promise.all([alicePhone, aliceLaptop, bobPhone, bobTablet, carolPhone].map((device) => device.untilSeq(mailboxLength(device.userId), 30_000)));
  for (const client of clients) client.close();

  record.database = await dumpCellDatabases({ postgresAdminUrl: testServices.postgresAdminUrl, namespace: test.namespace, cellIds: ["a", "b"] });
  const report = checkHistory(record);
  process.stdout.write(
    [
      `chaos: ${record.acks.length} acked of ${record.sends.length} sent in ${(sendingMs / 1000).toFixed(1)} s, ${retriesAfterFailure} app-level retries`,
      `chaos: faults: ${faults.join("; ")}`,
      `chaos: bob/tablet resumed and synced in ${resumeMs.toFixed(0)} ms; mailboxes: alice ${mailboxLength("alice")}, bob ${mailboxLength("bob")}, carol ${mailboxLength("carol")}`,
      `chaos: checker: ${report.summary}`,
      "",
    ].join("\n"),
  );
  expect(report.findings).toEqual([]);
  expect(report.ok).toBe(true);
  expect(record.acks).toHaveLength(messagesTotal);
  expect(record.database.messages).toHaveLength(messagesTotal);
  expect(faults).toHaveLength(3);
  // Both processes really died (killed by a signal, so no exit status).
  expect(await Promise.all(killed)).toEqual([null, null]);
});
