// The directory's Redis forgets (issue 11, item 8): every key of the namespace is deleted under paced
// traffic (what a Redis restarted without persistence, or a replica promoted after an asynchronous
// failover, does), then the whole topology restarts so no cache remembers either. Nobody may be placed a
// second time elsewhere: the directory rebuilds its entries from what the cells hold before it places
// anyone (docs/decisions/0023), every user stays in the cell they were in, the direct conversation keeps
// its home and history, and the history checker finds nothing lost, doubled or split.
import { afterAll, beforeAll, expect, it, onTestFailed } from "vitest";
import { Redis } from "ioredis";
import { DirectoryClient } from "@cellwire/cluster";
import { RedisDirectory } from "@cellwire/directory";
import { RecordedRun, type RecordedDevice } from "../test/recorded-run.ts";
import { placeUsers, startTestTopology, testServices, type TestTopology } from "./test-topology.ts";
import { isWarningOrError } from "../test/log-lines.ts";

/** Users and the cells they are put in; eight, so a second placement by chance matches for 1 run in 256. */
const homes: readonly (readonly [userId: string, cellId: string])[] = [
  ["alice", "a"],
  ["bob", "b"],
  ["carol", "a"],
  ["dave", "b"],
  ["erin", "a"],
  ["frank", "b"],
  ["grace", "a"],
  ["heidi", "b"],
];
const messagesPerUserBefore = 5;
const messagesPerUserAfter = 5;
/** Sends around the wipe: alice and bob keep writing while the keys go. */
const pacedSendsPerUser = 30;
const pacedSendIntervalMs = 10;
const deliveryDeadlineMs = 20_000;

let test: TestTopology | undefined;
const run = new RecordedRun();

function topology(): TestTopology {
  if (test === undefined) throw new Error("the topology did not start");
  return test;
}

function edgeUrls(first: number): string[] {
  const urls = topology().topology.edges.map((edge) => edge.webSocketUrl);
  return [...urls.slice(first), ...urls.slice(0, first)];
}

/** Where the directory says each user lives (undefined for one it does not know); places nobody. */
async function lookUpHomeCells(userIds: readonly string[]): Promise<(string | undefined)[]> {
  const connection = await topology().connectNats();
  try {
    const directory = new DirectoryClient(connection, topology().namespace, 5000);
    return await Promise.all(userIds.map(async (userId) => (await directory.lookupUser(userId))?.cellId));
  } finally {
    await connection.close();
  }
}

/** Unlinks every key of this test's namespace, and only those, from the Redis the directory uses. */
async function forgetDirectory(): Promise<number> {
  const redis = new Redis(testServices.redisUrl, { lazyConnect: true, maxRetriesPerRequest: 1 });
  try {
    await redis.connect();
    return await new RedisDirectory(redis, topology().namespace).destroyNamespace();
  } finally {
    redis.disconnect();
  }
}

async function pacedChat(alice: RecordedDevice, bob: RecordedDevice, conversationId: string, label: string): Promise<void> {
  for (let index = 0; index < pacedSendsPerUser; index++) {
    await run.send(alice, conversationId, `${label} ${index} from alice`, `alice-${label}-${index}`);
    await run.send(bob, conversationId, `${label} ${index} from bob`, `bob-${label}-${index}`);
    await new Promise((resolve) => setTimeout(resolve, pacedSendIntervalMs));
  }
}

beforeAll(async () => {
  test = await startTestTopology({
    label: "forget",
    cells: [
      { cellId: "a", workerCount: 1 },
      { cellId: "b", workerCount: 1 },
    ],
  });
  await placeUsers(test, homes);
});

afterAll(async () => {
  run.closeAll();
  await test?.destroy();
});

it("rebuilds the directory from the cells after its keys are deleted under traffic: nobody placed twice, nothing lost, doubled or split", async () => {
  onTestFailed(() => {
    process.stdout.write(
      `${(test?.output ?? [])
        .filter((line) => isWarningOrError(line) || line.includes("rebuil"))
        .slice(-80)
        .join("\n")}\n`,
    );
  });
  const userIds = homes.map(([userId]) => userId);
  const devices = new Map<string, RecordedDevice>();
  for (const [index, userId] of userIds.entries()) devices.set(userId, await run.openDevice(userId, "phone", edgeUrls(index % 2)));
  const device = (userId: string): RecordedDevice => {
    const found = devices.get(userId);
    if (found === undefined) throw new Error(`no device of ${userId}`);
    return found;
  };

  // Everyone gets a joined event (so a mailbox row in their home cell); alice and bob a direct conversation.
  const group = await device("alice").client.createGroup(
    "everyone",
    userIds.filter((userId) => userId !== "alice"),
  );
  run.conversation(group.conversationId, group.memberUserIds);
  const direct = await device("alice").client.openDirect("bob");
  run.conversation(direct.conversationId, direct.memberUserIds);
  for (let index = 0; index < messagesPerUserBefore; index++) {
    await run.send(device("alice"), direct.conversationId, `before ${index} from alice`, `alice-before-${index}`);
    await run.send(device("bob"), direct.conversationId, `before ${index} from bob`, `bob-before-${index}`);
  }
  await run.send(device("carol"), group.conversationId, "hello everyone", "carol-group-before");
  await Promise.all(userIds.map((userId) => device(userId).untilDelivered(deliveryDeadlineMs)));
  expect(await lookUpHomeCells(userIds)).toEqual(homes.map(([, cellId]) => cellId));

  // The keys go while alice and bob write: cached entries keep serving them.
  const traffic = pacedChat(device("alice"), device("bob"), direct.conversationId, "around");
  await device("alice").untilMessage(direct.conversationId, 2 * messagesPerUserBefore + 10, deliveryDeadlineMs);
  const unlinked = await forgetDirectory();
  expect(unlinked).toBeGreaterThan(homes.length);
  await traffic;
  await Promise.all([device("alice").untilDelivered(deliveryDeadlineMs), device("bob").untilDelivered(deliveryDeadlineMs)]);
  const resumeFrom = new Map(userIds.map((userId) => [userId, device(userId).lastSeq()]));
  run.closeAll();

  // No cache survives: every process starts again, against the emptied namespace.
  await topology().stopProcesses();
  const restartedAt = performance.now();
  await topology().restart();
  // A hello needs the user's home: refused (directory_unavailable, 4003) until the rebuild is done, the SDK
  // reconnects until then.
  for (const [index, userId] of userIds.entries()) {
    devices.set(userId, await run.openDevice(userId, "phone", edgeUrls(index % 2), resumeFrom.get(userId) ?? 0));
  }
  const reopenMs = performance.now() - restartedAt;
  // Everyone is where they were: nobody was placed again. (Soft: a failure here still shows what follows.)
  expect.soft(await lookUpHomeCells(userIds)).toEqual(homes.map(([, cellId]) => cellId));

  // The direct conversation is found in its home with its history, and goes on from its last seq.
  const reopened = await device("alice").client.openDirect("bob");
  expect(reopened.conversationId).toBe(direct.conversationId);
  const headBefore = 2 * (messagesPerUserBefore + pacedSendsPerUser);
  const history = await device("bob").client.history(direct.conversationId, { limit: 200 });
  expect.soft(history.messages).toHaveLength(headBefore);
  for (let index = 0; index < messagesPerUserAfter; index++) {
    const { seq } = await run.send(device("alice"), direct.conversationId, `after ${index} from alice`, `alice-after-${index}`);
    if (index === 0) expect.soft(seq).toBe(headBefore + 1);
    await run.send(device("bob"), direct.conversationId, `after ${index} from bob`, `bob-after-${index}`);
  }
  await run.send(device("heidi"), group.conversationId, "still here", "heidi-group-after");

  await run.settle(deliveryDeadlineMs);
  const report = await run.check(testServices.postgresAdminUrl, topology().namespace, ["a", "b"]);
  process.stdout.write(
    [
      `directory forgets: ${unlinked} keys deleted under traffic; every device back ${(reopenMs / 1000).toFixed(2)} s after the restart began`,
      `directory forgets: ${topology().output.findLast((line) => line.includes("directory rebuilt from")) ?? "no rebuild logged"}`,
      `directory forgets: ${run.record.acks.length} messages acked, ${run.retries} app-level retries`,
      `directory forgets: checker: ${report.summary}`,
      "",
    ].join("\n"),
  );
  expect(report.findings).toEqual([]);
  expect(report.ok).toBe(true);
  const messagesTotal = 2 * (messagesPerUserBefore + pacedSendsPerUser + messagesPerUserAfter) + 2;
  expect(run.record.acks).toHaveLength(messagesTotal);
  expect(run.record.database.messages).toHaveLength(messagesTotal);
  expect(run.sequenceGaps).toEqual([]);
}, 180_000);
