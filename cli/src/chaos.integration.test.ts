// Never lose, never duplicate, never reorder, under faults: three users on five devices exchange 1,000
// direct and group messages across both edges and both cells while a worker and then an edge are killed
// with SIGKILL, and one device stays offline and resumes at the end. The history checker then looks at
// every send, ack, delivery and the cells' databases, and must find nothing.
import { afterAll, beforeAll, expect, it, onTestFailed } from "vitest";
import { RecordedRun, type RecordedDevice } from "../test/recorded-run.ts";
import { placeUsers, startTestTopology, testServices, type TestTopology } from "./test-topology.ts";
import { isWarningOrError } from "../test/log-lines.ts";

const messagesTotal = 1000;
const workerKilledAfterAcks = 250;
const edgeKilledAfterAcks = 600;
const offlineAfterAcks = 100;

let test: TestTopology;
const run = new RecordedRun();

function edgeUrls(first: number): string[] {
  const urls = test.topology.edges.map((edge) => edge.webSocketUrl);
  return [...urls.slice(first), ...urls.slice(0, first)];
}

beforeAll(async () => {
  test = await startTestTopology({ label: "chaos" });
  await placeUsers(test, [
    ["alice", "a"],
    ["bob", "b"],
    ["carol", "a"],
  ]);
});

afterAll(async () => {
  run.closeAll();
  await test?.destroy();
});

it("loses, doubles and reorders nothing across a worker kill, an edge kill and an offline device", async () => {
  onTestFailed(() => {
    process.stdout.write(`${test.output.filter(isWarningOrError).slice(-80).join("\n")}\n`);
  });
  const alicePhone = await run.openDevice("alice", "phone", edgeUrls(0));
  const aliceLaptop = await run.openDevice("alice", "laptop", edgeUrls(1));
  const bobPhone = await run.openDevice("bob", "phone", edgeUrls(1));
  let bobTablet: RecordedDevice = await run.openDevice("bob", "tablet", edgeUrls(0), 0);
  const carolPhone = await run.openDevice("carol", "phone", edgeUrls(0));

  const aliceBob = await alicePhone.client.openDirect("bob");
  const bobCarol = await bobPhone.client.openDirect("carol");
  const group = await carolPhone.client.createGroup("everyone", ["alice", "bob"]);
  for (const conversation of [aliceBob, bobCarol, group]) run.conversation(conversation.conversationId, conversation.memberUserIds);

  const faults: string[] = [];
  const killed: Promise<number | null>[] = [];
  let acked = 0;
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
    senders.map(async (sender) => {
      const conversations = run.conversationsOf(sender.userId);
      for (let index = 0; index < perSender; index++) {
        // The tablet goes offline between two of its own sends and hands the rest of its share to bob's phone.
        if (sender === bobTablet && !tabletOffline && acked >= offlineAfterAcks) {
          bobTablet.client.close();
          tabletOffline = true;
          faults.push(`bob/tablet offline at mailbox seq ${bobTablet.lastSeq()}`);
        }
        const from = sender === bobTablet && tabletOffline ? bobPhone : sender;
        const conversationId = conversations[index % conversations.length] ?? "";
        await run.send(
          from,
          conversationId,
          `message ${index} from ${sender.userId}/${sender.deviceId}`,
          `${sender.userId}-${sender.deviceId}-${index}`,
        );
        afterAck();
      }
    }),
  );
  const sendingMs = performance.now() - startedAt;

  // The offline device comes back (to whichever edge is alive) and must catch up with everything.
  const resumeStartedAt = performance.now();
  bobTablet = await run.openDevice("bob", "tablet", edgeUrls(1), bobTablet.lastSeq());
  const resumeMs = performance.now() - resumeStartedAt;

  await run.settle(30_000);
  const report = await run.check(testServices.postgresAdminUrl, test.namespace, ["a", "b"]);
  process.stdout.write(
    [
      `chaos: ${run.record.acks.length} acked of ${run.record.sends.length} sent in ${(sendingMs / 1000).toFixed(1)} s, ${run.retries} app-level retries`,
      `chaos: faults: ${faults.join("; ")}`,
      `chaos: bob/tablet resumed and synced in ${resumeMs.toFixed(0)} ms; conversations (joined events): alice ${run.mailboxLength("alice")}, bob ${run.mailboxLength("bob")}, carol ${run.mailboxLength("carol")}`,
      `chaos: checker: ${report.summary}`,
      "",
    ].join("\n"),
  );
  expect(report.findings).toEqual([]);
  expect(report.ok).toBe(true);
  // Gaps the SDK repaired by reconnecting are invisible to the checker, yet each is an edge breaking its promise.
  expect(run.sequenceGaps).toEqual([]);
  expect(run.record.acks).toHaveLength(messagesTotal);
  expect(run.record.database.messages).toHaveLength(messagesTotal);
  expect(faults).toHaveLength(3);
  // Both processes really died (killed by a signal, so no exit status).
  expect(await Promise.all(killed)).toEqual([null, null]);
});
