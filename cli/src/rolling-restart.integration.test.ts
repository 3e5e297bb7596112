// Graceful changes under traffic: every worker of both cells is restarted in turn with SIGTERM (it hands
// its keys over and finishes in-flight work first), and a worker added at runtime takes its share; the
// clients see nothing worse than retries and the history checker finds nothing wrong.
import { afterAll, beforeAll, expect, it, onTestFailed } from "vitest";
import { Ring } from "@cellwire/cluster";
import { RecordedRun } from "../test/recorded-run.ts";
import { placeUsers, startTestTopology, testServices, type TestTopology } from "./test-topology.ts";
import { isWarningOrError } from "../test/log-lines.ts";

let test: TestTopology;
const run = new RecordedRun();

beforeAll(async () => {
  test = await startTestTopology({ label: "rolling" });
  await placeUsers(test, [
    ["alice", "a"],
    ["bob", "b"],
  ]);
});

afterAll(async () => {
  run.closeAll();
  await test?.destroy();
});

it("restarts every worker under traffic and adds one, with nothing lost, doubled or reordered", async () => {
  onTestFailed(() => {
    process.stdout.write(`${test.output.filter(isWarningOrError).slice(-80).join("\n")}\n`);
  });
  const urls = test.topology.edges.map((edge) => edge.webSocketUrl);
  const alice = await run.openDevice("alice", "phone", urls);
  const bob = await run.openDevice("bob", "phone", [...urls].reverse());
  // Several conversations, so that every worker of both cells owns some of them.
  const peers = ["bob", ...Array.from({ length: 7 }, (_, index) => `peer${index}`)];
  for (const peer of peers) {
    const conversation = await alice.client.openDirect(peer);
    run.conversation(conversation.conversationId, conversation.memberUserIds);
  }
  const group = await bob.client.createGroup("both cells", ["alice"]);
  run.conversation(group.conversationId, group.memberUserIds);

  let stopping = false;
  const restarts: string[] = [];
  const traffic = Promise.all(
    [alice, bob].map(async (sender) => {
      const conversations = run.conversationsOf(sender.userId);
      for (let index = 0; !stopping || index < 20; index++) {
        const conversationId = conversations[index % conversations.length] ?? "";
        await run.send(sender, conversationId, `rolling ${index} from ${sender.userId}`, `${sender.userId}-${index}`);
      }
    }),
  );

  const startedAt = performance.now();
  for (const processName of ["cellwire-worker-a-1", "cellwire-worker-a-2", "cellwire-worker-b-1", "cellwire-worker-b-2"]) {
    const exitCode = await test.topology.signal(processName, "SIGTERM");
    expect(exitCode).toBe(0);
    await test.topology.respawn(processName);
    restarts.push(processName);
  }
  const restartMs = performance.now() - startedAt;

  // A worker added at runtime takes its share of cell a's keys: a conversation the new ring gives it is
  // served (the old workers answer not_owner for it once they see the new ring, so the router goes to it).
  const added = await test.topology.addWorker("a");
  const ring = new Ring(["a-1", "a-2", added]);
  const ownedByNewWorker = run.conversationsOf("alice").filter((conversationId) => ring.ownerOf(conversationId) === added);
  stopping = true;
  await traffic;
  for (const conversationId of ownedByNewWorker)
    await run.send(alice, conversationId, "served by the new worker", `alice-new-${conversationId}`);

  await run.settle(30_000);
  const report = await run.check(testServices.postgresAdminUrl, test.namespace, ["a", "b"]);
  process.stdout.write(
    [
      `rolling restart: ${restarts.length} workers restarted with SIGTERM in ${(restartMs / 1000).toFixed(1)} s under traffic, then ${added} added`,
      `rolling restart: ${run.record.acks.length} acked of ${run.record.sends.length} sends, ${run.retries} app-level retries; ${ownedByNewWorker.length} conversations moved to ${added}`,
      `rolling restart: checker: ${report.summary}`,
      "",
    ].join("\n"),
  );
  expect(report.findings).toEqual([]);
  expect(run.sequenceGaps).toEqual([]);
  expect(run.record.acks).toHaveLength(run.record.sends.length);
  expect(run.retries).toBe(0);
  expect(ownedByNewWorker.length).toBeGreaterThan(0);
});
