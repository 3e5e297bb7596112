// Redis goes down under a running topology (a private redis-server, never the machine's shared one):
// users whose entries the edges and workers have cached keep chatting both ways, a user never seen gets a
// retryable directory_unavailable and close 4003, no process dies, and once Redis is back (with its data,
// from the append-only file) the new user gets in and chats. The history checker then finds nothing.
import { afterAll, beforeAll, expect, it, onTestFailed } from "vitest";
import { DirectoryClient } from "@cellwire/cluster";
import { closeCodes, protocolVersion } from "@cellwire/protocol";
import { defaultDevKeyDirectory, signDevToken } from "@cellwire/edge/dev-keys";
import { RawSocket } from "../test/raw-socket.ts";
import { RecordedRun, type RecordedDevice } from "../test/recorded-run.ts";
import { startPrivateRedis, type PrivateRedis } from "../test/redis-server.ts";
import { placeUsers, startTestTopology, testServices, type TestTopology } from "./test-topology.ts";
import { pollUntil } from "@cellwire/testkit";
import { isWarningOrError } from "../test/log-lines.ts";

const messagesPerUserBefore = 3;
const messagesPerUserDuringOutage = 50;
const outputPollIntervalMs = 50;
const deliveryDeadlineMs = 15_000;
const healthDeadlineMs = 2_000;

let redis: PrivateRedis | undefined;
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

/**
 * True while the named process runs. SIGCONT does nothing to a running process; what matters is the exit
 * promise it returns, already settled (and so first in the race) for a child that exited.
 */
async function isRunning(processName: string): Promise<boolean> {
  const stillRunning = Symbol("running");
  const outcome = await Promise.race([topology().topology.signal(processName, "SIGCONT"), Promise.resolve(stillRunning)]);
  return outcome === stillRunning;
}

/** Where the directory says each user lives (undefined for a user it does not know); places nobody. */
async function lookUpHomeCells(userIds: readonly string[]): Promise<(string | undefined)[]> {
  const connection = await topology().connectNats();
  try {
    const directory = new DirectoryClient(connection, topology().namespace, 5000);
    return await Promise.all(userIds.map(async (userId) => (await directory.lookupUser(userId))?.cellId));
  } finally {
    await connection.close();
  }
}

async function edgesHealthy(): Promise<boolean[]> {
  return Promise.all(
    topology().topology.edges.map(async (edge) => {
      const response = await fetch(new URL("healthz", edge.httpUrl), { signal: AbortSignal.timeout(healthDeadlineMs) });
      return response.ok;
    }),
  );
}

/** Waits (polling, with a deadline) for a line of the topology's output that matches. */
function untilOutput(matches: (line: string) => boolean, deadlineMs: number): Promise<string> {
  return pollUntil("a matching output line", () => topology().output.find(matches), { deadlineMs, intervalMs: outputPollIntervalMs });
}

/** A hello from a user no edge has seen; resolves with the error frame, the close code and how long the refusal took. */
async function helloOfNewUser(
  url: string,
  userId: string,
): Promise<{ refusal: Record<string, unknown>; closeCode: number; refusalMs: number }> {
  const socket = await RawSocket.open(url);
  const startedAt = performance.now();
  socket.send(
    JSON.stringify({ type: "hello", protocolVersion, token: await signDevToken(defaultDevKeyDirectory, userId), deviceId: "raw" }),
  );
  const refusal = await socket.frame((frame) => frame.type === "error");
  const closeCode = await socket.closed();
  return { refusal, closeCode, refusalMs: performance.now() - startedAt };
}

/** Counts the welcomes a device gets from now on: any is a reconnect. */
function countWelcomes(device: RecordedDevice): () => number {
  let welcomes = 0;
  device.client.on("welcome", () => welcomes++);
  return () => welcomes;
}

async function chat(alice: RecordedDevice, bob: RecordedDevice, conversationId: string, label: string, perUser: number): Promise<void> {
  for (let index = 0; index < perUser; index++) {
    await run.send(alice, conversationId, `${label} ${index} from alice`, `alice-${label}-${index}`);
    await run.send(bob, conversationId, `${label} ${index} from bob`, `bob-${label}-${index}`);
  }
  // Each received the other's messages (and its own), live on the session it already had.
  await Promise.all([alice.untilDelivered(deliveryDeadlineMs), bob.untilDelivered(deliveryDeadlineMs)]);
}

beforeAll(async () => {
  redis = await startPrivateRedis();
  test = await startTestTopology({
    label: "redis",
    redisUrl: redis.url,
    cells: [
      { cellId: "a", workerCount: 1 },
      { cellId: "b", workerCount: 1 },
    ],
  });
  await placeUsers(test, [
    ["alice", "a"],
    ["bob", "b"],
  ]);
});

afterAll(async () => {
  run.closeAll();
  try {
    // The cleanup empties the namespace's keys, so Redis must be up (a failed test may have left it down).
    if (redis !== undefined && !redis.running) await redis.start().catch(() => undefined);
    await test?.destroy();
  } finally {
    await redis?.destroy();
  }
});

it("serves cached users through a Redis outage, refuses new users retryably, and recovers", async () => {
  onTestFailed(() => {
    process.stdout.write(`${(test?.output ?? []).filter(isWarningOrError).slice(-60).join("\n")}\n`);
    process.stdout.write(`${(redis?.output ?? []).slice(-20).join("\n")}\n`);
  });
  const privateRedis = redis;
  if (privateRedis === undefined) throw new Error("the private Redis did not start");
  // The directory really uses the private Redis, not the machine's.
  await untilOutput((line) => line.startsWith("[cellwire-directory]") && line.includes(`from redis at ${privateRedis.url}`), 1000);

  const alice = await run.openDevice("alice", "phone", edgeUrls(0));
  const bob = await run.openDevice("bob", "phone", edgeUrls(1));
  const direct = await alice.client.openDirect("bob");
  run.conversation(direct.conversationId, direct.memberUserIds);
  // Both edges and the conversation's worker learn every entry they need before Redis goes.
  await chat(alice, bob, direct.conversationId, "before", messagesPerUserBefore);
  const aliceWelcomes = countWelcomes(alice);
  const bobWelcomes = countWelcomes(bob);

  await privateRedis.stop();
  const outageStartedAt = performance.now();
  expect(privateRedis.running).toBe(false);

  await chat(alice, bob, direct.conversationId, "outage", messagesPerUserDuringOutage);

  // The directory noticed (so the refusals below come from a directory that knows Redis is gone).
  await untilOutput((line) => line.startsWith("[cellwire-directory]") && line.includes("connection lost"), 5000);
  // A user no edge has seen needs the directory, which needs Redis: a retryable error, then 4003, on either edge.
  const refusals = await Promise.all(edgeUrls(0).map((url) => helloOfNewUser(url, "carol")));
  for (const { refusal, closeCode } of refusals) {
    expect(refusal).toMatchObject({ type: "error", code: "directory_unavailable", retryable: true });
    expect(closeCode).toBe(closeCodes.unavailable.code);
  }
  expect(closeCodes.unavailable.code).toBe(4003);
  const refusalMs = Math.max(...refusals.map((outcome) => outcome.refusalMs));

  // Nothing crashed, and the cached users never lost their sessions.
  const processNames = topology().topology.processNames;
  expect(processNames).toHaveLength(1 + 2 + 2);
  expect(await Promise.all(processNames.map(isRunning))).toEqual(processNames.map(() => true));
  expect(await edgesHealthy()).toEqual([true, true]);
  expect([aliceWelcomes(), bobWelcomes()]).toEqual([0, 0]);
  expect([alice.client.state, bob.client.state]).toEqual(["open", "open"]);

  await privateRedis.start();
  const outageMs = performance.now() - outageStartedAt;
  const recoveryStartedAt = performance.now();
  const carol = await run.openDevice("carol", "phone", edgeUrls(0));
  const recoveryMs = performance.now() - recoveryStartedAt;
  const carolAlice = await carol.client.openDirect("alice");
  run.conversation(carolAlice.conversationId, carolAlice.memberUserIds);
  await run.send(carol, carolAlice.conversationId, "hello alice, I made it in", "carol-after-0");
  await run.send(alice, carolAlice.conversationId, "welcome carol", "alice-after-0");
  // Redis kept the directory's data across the restart (the append-only file): the entries are still there.
  expect(await lookUpHomeCells(["alice", "bob"])).toEqual(["a", "b"]);

  await run.settle(deliveryDeadlineMs);
  const report = await run.check(testServices.postgresAdminUrl, topology().namespace, ["a", "b"]);
  const outageMessages = 2 * messagesPerUserDuringOutage;
  process.stdout.write(
    [
      `redis outage: ${outageMessages} messages sent and delivered while Redis was down for ${(outageMs / 1000).toFixed(2)} s; ${run.retries} app-level retries`,
      `redis outage: a new user was refused (directory_unavailable, close 4003) on both edges within ${refusalMs.toFixed(0)} ms`,
      `redis outage: the new user got in ${recoveryMs.toFixed(0)} ms after Redis answered PING again`,
      `redis outage: checker: ${report.summary}`,
      "",
    ].join("\n"),
  );
  expect(report.findings).toEqual([]);
  expect(report.ok).toBe(true);
  const messagesTotal = 2 * messagesPerUserBefore + outageMessages + 2;
  expect(run.record.acks).toHaveLength(messagesTotal);
  expect(run.record.database.messages).toHaveLength(messagesTotal);
  expect(run.retries).toBe(0);
  expect(run.sequenceGaps).toEqual([]);
}, 120_000);
