// Mailboxes and resume on the real topology: a device that was away receives exactly what it missed, in
// mailbox order, whether it comes back to an idle mailbox or while messages keep arriving; every device
// of a user converges on the same mailbox; the history checker finds nothing wrong with the whole run.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { WebSocket } from "ws";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { CellwireClient } from "@cellwire/client";
import { DirectoryClient } from "@cellwire/cluster";
import { defaultDevKeyDirectory, signDevToken } from "@cellwire/edge/dev-keys";
import { checkHistory, dumpCellDatabases, type HistoryRecord } from "@cellwire/loadtest";
import type { SequencedEvent } from "@cellwire/protocol";
import { startTestTopology, testServices, type TestTopology } from "./test-topology.ts";

let test: TestTopology;
let nats: NatsConnection;
const clients: CellwireClient[] = [];
const devices: Device[] = [];
/** Members of each conversation the test creates, to know how long each user's mailbox must grow. */
const membersOf = new Map<string, readonly string[]>();

const record: HistoryRecord = { sends: [], acks: [], deliveries: [], database: { messages: [], members: [], mailboxes: [] }, expectComplete: true };

type Device = {
  readonly userId: string;
  readonly deviceId: string;
  readonly client: CellwireClient;
  readonly events: SequencedEvent[];
  untilSeq(seq: number, deadlineMs?: number): Promise<void>;
};

function edgeUrl(index: number): string {
  const edge = test.topology.edges[index];
  if (edge === undefined) throw new Error(`no edge ${index}`);
  return edge.webSocketUrl;
}

async function device(userId: string, deviceId: string, edgeIndex: number, resumeAfterSeq?: number): Promise<Device> {
  const client = new CellwireClient({
    url: edgeUrl(edgeIndex),
    deviceId,
    WebSocket,
    tokenProvider: () => signDevToken(defaultDevKeyDirectory, userId, { deviceId }),
    ...(resumeAfterSeq === undefined ? {} : { resumeAfterSeq }),
  });
  clients.push(client);
  // Every event a device ever receives is recorded for the checker, across its sessions.
  let delivered = record.deliveries.find((entry) => entry.userId === userId && entry.deviceId === deviceId);
  if (delivered === undefined) {
    delivered = { userId, deviceId, events: [], ...(resumeAfterSeq === undefined ? {} : { startAfterSeq: resumeAfterSeq }) };
    record.deliveries.push(delivered);
  }
  const sink = delivered;
  const events: SequencedEvent[] = [];
  const waiters = new Set<() => void>();
  client.on("event", (sequenced) => {
    events.push(sequenced);
    if (sequenced.event.kind === "message") sink.events.push({ seq: sequenced.seq, message: sequenced.event.message });
    for (const waiter of [...waiters]) waiter();
  });
  const synced = client.whenSynced();
  await client.connect();
  await synced;
  const handle: Device = {
    userId,
    deviceId,
    client,
    events,
    untilSeq: (seq, deadlineMs = 15_000) =>
      new Promise((resolve, reject) => {
        const check = (): void => {
          if ((events.at(-1)?.seq ?? resumeAfterSeq ?? 0) < seq) return;
          clearTimeout(timer);
          waiters.delete(check);
          resolve();
        };
        const timer = setTimeout(() => {
          waiters.delete(check);
          reject(new Error(`${userId}/${deviceId} reached seq ${events.at(-1)?.seq ?? "none"}, not ${seq}`));
        }, deadlineMs);
        waiters.add(check);
        check();
      }),
  };
  devices.push(handle);
  return handle;
}

async function send(from: Device, conversationId: string, body: string): Promise<void> {
  const clientMessageId = `${from.userId}-${from.deviceId}-${record.sends.length}`;
  record.sends.push({ senderUserId: from.userId, senderDeviceId: from.deviceId, conversationId, clientMessageId, body });
  const ack = await from.client.send(conversationId, body, { clientMessageId });
  record.acks.push({ senderUserId: from.userId, conversationId, clientMessageId, messageId: ack.messageId, seq: ack.seq });
}

const seqsOf = (events: readonly SequencedEvent[]): number[] => events.map((event) => event.seq);
const idsOf = (events: readonly SequencedEvent[]): string[] => events.map((event) => (event.event.kind === "message" ? event.event.message.messageId : "?"));
const oneTo = (count: number, from = 1): number[] => Array.from({ length: count - from + 1 }, (_, index) => from + index);

beforeAll(async () => {
  test = await startTestTopology({ label: "resume" });
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

describe("mailboxes and resume", () => {
  it("gives a returning device exactly what it missed and makes every device converge", async () => {
    const alice = await device("alice", "phone", 0);
    const carol = await device("carol", "phone", 1);
    const bobPhone = await device("bob", "phone", 1);
    const bobLaptop = await device("bob", "laptop", 0, 0);
    bobLaptop.client.close();

    const direct = await alice.client.openDirect("bob");
    const group = await carol.client.createGroup("trio", ["alice", "bob"]);
    membersOf.set(direct.conversationId, direct.memberUserIds);
    membersOf.set(group.conversationId, group.memberUserIds);
    for (let index = 0; index < 40; index++) {
      await send(alice, direct.conversationId, `direct ${index}`);
      if (index % 4 === 0) await send(carol, group.conversationId, `group ${index}`);
    }
    const total = 50;
    await bobPhone.untilSeq(total);
    expect(seqsOf(bobPhone.events)).toEqual(oneTo(total));

    const startedAt = performance.now();
    const laptopAgain = await device("bob", "laptop", 0, 0);
    const resumeMs = performance.now() - startedAt;
    expect(seqsOf(laptopAgain.events)).toEqual(oneTo(total));
    expect(idsOf(laptopAgain.events)).toEqual(idsOf(bobPhone.events));
    process.stdout.write(`resume of ${total} missed events took ${resumeMs.toFixed(0)} ms\n`);

    const tablet = await device("bob", "tablet", 1, 20);
    expect(seqsOf(tablet.events)).toEqual(oneTo(total, 21));

    // Alice's own messages reach her mailbox too, so her other devices converge on them.
    const aliceLaptop = await device("alice", "laptop", 1, 0);
    expect(aliceLaptop.events).toHaveLength(total);
  });

  it("resumes while messages keep arriving without losing or doubling any", async () => {
    const alice = await device("alice", "desk", 0);
    const direct = await alice.client.openDirect("bob");
    const bobWatch = await device("bob", "watch", 1);
    const base = bobWatch.client.lastSeq ?? 0;

    const sending = (async () => {
      for (let index = 0; index < 30; index++) await send(alice, direct.conversationId, `during resume ${index}`);
    })();
    const late = await device("bob", "late", 0, 0);
    await sending;
    await bobWatch.untilSeq(base + 30);
    await late.untilSeq(base + 30);
    expect(seqsOf(late.events)).toEqual(oneTo(base + 30));
    expect(idsOf(late.events.slice(base))).toEqual(idsOf(bobWatch.events));
  });

  it("passes the history checker over the whole run", async () => {
    // Quiescence: every open device has received its user's whole mailbox (one event per acked message
    // of each conversation the user belongs to), so the checker may demand completeness.
    const mailboxLength = (userId: string): number => record.acks.filter((ack) => membersOf.get(ack.conversationId)?.includes(userId) === true).length;
    await Promise.all(devices.filter((entry) => entry.client.state !== "closed").map((entry) => entry.untilSeq(mailboxLength(entry.userId))));
    for (const client of clients) client.close();
    record.database = await dumpCellDatabases({ postgresAdminUrl: testServices.postgresAdminUrl, namespace: test.namespace, cellIds: ["a", "b"] });
    const report = checkHistory(record);
    expect(report.findings).toEqual([]);
    expect(report.ok).toBe(true);
    expect(record.acks.length).toBeGreaterThan(70);
  });
});
