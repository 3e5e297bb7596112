// Live migration on real processes, Redis, NATS and Postgres (issue 5): 100 users chat in pairs and in
// groups while every user's mailbox and every conversation moves from its cell to the other and back;
// then a cell added at runtime (`cellwire add-cell`) takes users, and cell b is drained under traffic
// (`cellwire drain`) and stopped; in between, a group moves out and back with a member added while it
// was away. Each time the history checker finds nothing lost, doubled or reordered. The figures
// (migration pauses, send latencies, drain time) are printed, never asserted.
import { afterAll, beforeAll, describe, expect, it, onTestFailed } from "vitest";
import type { NatsConnection } from "@nats-io/transport-node";
import { DirectoryClient } from "@cellwire/cluster";
import type { DirectoryEntryKind } from "@cellwire/protocol";
import { migrateKey, migrationTools, type MigrationTools } from "./migration.ts";
import { RecordedRun, type RecordedDevice } from "../test/recorded-run.ts";
import { runCli } from "../test/run-cli.ts";
import { percentile } from "./statistics.ts";
import { placeUsers, startTestTopology, testServices, type TestTopology } from "./test-topology.ts";
import { isWarningOrError } from "../test/log-lines.ts";

const userCount = 100;
const groupCount = 5;
const groupSize = 4;
/** Moves in flight at once while the users chat. */
const migrationConcurrency = 4;
/** Chat rounds at least, and at most (a round: every user sends one message to its pair). */
const chatRoundsMin = 5;
const chatRoundsMax = 200;
const settleDeadlineMs = 60_000;
/**
 * A round starts at most this often: about 100 messages a second from 100 users, a steady chat rather than
 * a flood, so the pauses measured are the migration's own and not the queueing of a saturated machine.
 */
const chatRoundIntervalMs = 1000;

let test: TestTopology | undefined;
let nats: NatsConnection | undefined;
let tools: MigrationTools | undefined;
/** One record for both tests: the second's users and conversations carry the first's history. */
const run = new RecordedRun();

function topology(): TestTopology {
  if (test === undefined) throw new Error("the topology did not start");
  return test;
}
function migration(): MigrationTools {
  if (tools === undefined) throw new Error("no migration tools");
  return tools;
}

const userIds = Array.from({ length: userCount }, (_, index) => `u${String(index).padStart(3, "0")}`);

function summary(label: string, values: readonly number[]): string {
  const figure = (p: number): string => `${Math.round(percentile(values, p) ?? 0)}`;
  return `${label}: n=${values.length}, p50 ${figure(50)} ms, p99 ${figure(99)} ms, max ${figure(100)} ms`;
}

type Chat = {
  devices: Map<string, RecordedDevice>;
  pairs: [string, string, string][];
  groups: { conversationId: string; senderUserId: string }[];
};

/**
 * Opens one device per user, alternating edges; a user whose device was open before resumes it from the
 * last mailbox seq it held, so the record shows one stream per device across both tests.
 */
async function openChat(run: RecordedRun, users: readonly string[], deviceId: string): Promise<Chat> {
  const urls = topology().topology.edges.map((edge) => edge.webSocketUrl);
  const devices = new Map<string, RecordedDevice>();
  await Promise.all(
    users.map(async (userId, index) => {
      const ordered = [...urls.slice(index % urls.length), ...urls.slice(0, index % urls.length)];
      const earlier = run.devices.filter((device) => device.userId === userId && device.deviceId === deviceId).at(-1);
      devices.set(userId, await run.openDevice(userId, deviceId, ordered, earlier?.lastSeq()));
    }),
  );
  const device = (userId: string): RecordedDevice => {
    const found = devices.get(userId);
    if (found === undefined) throw new Error(`no device for ${userId}`);
    return found;
  };
  const pairs: [string, string, string][] = [];
  for (let index = 0; index + 1 < users.length; index += 2) {
    const [first, second] = [users[index] as string, users[index + 1] as string];
    const conversation = await device(first).client.openDirect(second);
    run.conversation(conversation.conversationId, [first, second]);
    pairs.push([first, second, conversation.conversationId]);
  }
  const groups: Chat["groups"] = [];
  for (let group = 0; group < groupCount; group++) {
    const members = users.slice(group * groupSize, group * groupSize + groupSize);
    const creator = members[0] as string;
    const conversation = await device(creator).client.createGroup(`group ${group}`, members.slice(1));
    run.conversation(conversation.conversationId, members);
    groups.push({ conversationId: conversation.conversationId, senderUserId: creator });
  }
  return { devices, pairs, groups };
}

/**
 * Every user sends one message per round to its pair, and the first member of each group one to the
 * group, until `done()` says to stop (and at least chatRoundsMin rounds ran). Returns the send latencies.
 */
async function chatUntil(
  run: RecordedRun,
  chat: Chat,
  label: string,
  done: () => boolean,
): Promise<{ latenciesMs: number[]; rounds: number }> {
  const latenciesMs: number[] = [];
  let round = 0;
  const timed = async (device: RecordedDevice, conversationId: string, body: string, clientMessageId: string): Promise<void> => {
    // Spread over the round, as people type, rather than a burst of every user at the same instant.
    await new Promise((resolve) => setTimeout(resolve, Math.random() * chatRoundIntervalMs * 0.8));
    const startedAtMs = performance.now();
    await run.send(device, conversationId, body, clientMessageId);
    latenciesMs.push(performance.now() - startedAtMs);
  };
  for (; round < chatRoundsMax && (round < chatRoundsMin || !done()); round++) {
    const roundStartedAtMs = performance.now();
    const sends: Promise<void>[] = [];
    for (const [first, second, conversationId] of chat.pairs) {
      for (const userId of [first, second]) {
        const device = chat.devices.get(userId);
        if (device !== undefined)
          sends.push(timed(device, conversationId, `${label} ${round} from ${userId}`, `${label}-${round}-${userId}`));
      }
    }
    chat.groups.forEach(({ conversationId, senderUserId }, group) => {
      const device = chat.devices.get(senderUserId);
      if (device !== undefined)
        sends.push(timed(device, conversationId, `${label} ${round} to group ${group}`, `${label}-${round}-group-${group}`));
    });
    await Promise.all(sends);
    const untilNextRoundMs = roundStartedAtMs + chatRoundIntervalMs - performance.now();
    if (untilNextRoundMs > 0 && !done()) await new Promise((resolve) => setTimeout(resolve, untilNextRoundMs));
  }
  return { latenciesMs, rounds: round };
}

/** On failure: the topology's last warnings and errors, then its last lines. */
function printOutput(): void {
  const output = topology().output;
  const problems = output.filter(isWarningOrError);
  // Relay retries repeat by the hundred: the first of the other problems say more.
  const others = problems.filter((line) => !line.includes(" not reached, retried later"));
  console.log(`${others.slice(0, 60).join("\n")}\n---\n${problems.slice(-20).join("\n")}\n---\n${output.slice(-20).join("\n")}`);
}

/** The workers' log lines of the `count` moves with the longest pauses. */
function slowestMoves(count: number): string[] {
  const pauseOf = (line: string): number => Number(/paused (\d+) ms/.exec(line)?.[1] ?? -1);
  return topology()
    .output.filter((line) => pauseOf(line) >= 0)
    .sort((left, right) => pauseOf(right) - pauseOf(left))
    .slice(0, count);
}

/** Runs the moves with a bounded number in flight; returns each move's reported write pause. */
async function moveAll(
  moves: readonly { kind: DirectoryEntryKind; id: string; toCellId: string }[],
): Promise<{ userPausesMs: number[]; conversationPausesMs: number[]; notMoved: string[] }> {
  const userPausesMs: number[] = [];
  const conversationPausesMs: number[] = [];
  const notMoved: string[] = [];
  let next = 0;
  await Promise.all(
    Array.from({ length: migrationConcurrency }, async () => {
      while (next < moves.length) {
        const move = moves[next++];
        if (move === undefined) break;
        const result = await migrateKey(migration(), move.kind, move.id, move.toCellId);
        if (result.alreadyMoved || result.toCellId !== move.toCellId) notMoved.push(`${move.kind} ${move.id}`);
        (move.kind === "user" ? userPausesMs : conversationPausesMs).push(result.pauseMs);
      }
    }),
  );
  return { userPausesMs, conversationPausesMs, notMoved };
}

beforeAll(async () => {
  test = await startTestTopology({ label: "migrate" });
  nats = await test.connectNats();
  tools = migrationTools(nats, test.namespace);
  await placeUsers(
    test,
    userIds.map((userId, index) => [userId, index % 2 === 0 ? "a" : "b"] as const),
  );
});

afterAll(async () => {
  run.closeAll();
  tools?.stop();
  await nats?.close();
  await test?.destroy();
});

describe("live migration", () => {
  it("moves 100 users and their conversations from cell to cell and back while they chat, losing, doubling and reordering nothing", async () => {
    onTestFailed(printOutput);
    const chat = await openChat(run, userIds, "phone");
    const directory = new DirectoryClient(nats as NatsConnection, topology().namespace, 5000);
    const homeOf = async (kind: DirectoryEntryKind, id: string): Promise<string> => {
      const entry = await directory.lookup(kind, id);
      if (entry === undefined) throw new Error(`no entry for ${kind} ${id}`);
      return entry.cellId;
    };
    const other = (cellId: string): string => (cellId === "a" ? "b" : "a");
    const keys: { kind: DirectoryEntryKind; id: string; home: string }[] = [
      ...(await Promise.all(userIds.map(async (id) => ({ kind: "user" as const, id, home: await homeOf("user", id) })))),
      ...(await Promise.all(
        [...chat.pairs.map(([, , id]) => id), ...chat.groups.map((group) => group.conversationId)].map(async (id) => ({
          kind: "conversation" as const,
          id,
          home: await homeOf("conversation", id),
        })),
      )),
    ];
    let migrating = true;
    const chatting = chatUntil(run, chat, "move", () => !migrating);
    const startedAtMs = performance.now();
    let there: Awaited<ReturnType<typeof moveAll>>;
    let back: Awaited<ReturnType<typeof moveAll>>;
    try {
      // Users and conversations interleaved, so mailboxes and conversation logs move while each other move.
      const interleaved = <T>(items: readonly T[]): T[] => items.map((_, index) => items[(index * 37) % items.length] as T);
      there = await moveAll(interleaved(keys).map((key) => ({ kind: key.kind, id: key.id, toCellId: other(key.home) })));
      back = await moveAll(interleaved(keys).map((key) => ({ kind: key.kind, id: key.id, toCellId: key.home })));
    } finally {
      migrating = false;
    }
    const migrationMs = performance.now() - startedAtMs;
    const { latenciesMs, rounds } = await chatting;
    await run.settle(settleDeadlineMs);
    const report = await run.check(testServices.postgresAdminUrl, topology().namespace, ["a", "b"]);
    const userPauses = [...there.userPausesMs, ...back.userPausesMs];
    const conversationPauses = [...there.conversationPausesMs, ...back.conversationPausesMs];
    console.log(
      [
        `migration: ${userPauses.length} user moves and ${conversationPauses.length} conversation moves in ${(migrationMs / 1000).toFixed(1)} s (${migrationConcurrency} at once) while ${rounds} chat rounds ran`,
        `migration: ${summary("write pause of a user move (freeze to activation)", userPauses)}`,
        `migration: ${summary("write pause of a conversation move", conversationPauses)}`,
        `migration: ${summary("send to ack during the moves (retries on moving included)", latenciesMs)}`,
        `migration: ${run.record.acks.length} acks, ${run.retries} app-level retries`,
        `migration: checker: ${report.summary}`,
        // Where the slowest pauses went, as the moving workers logged them.
        ...slowestMoves(3).map((line) => `migration: slowest: ${line}`),
      ].join("\n"),
    );
    expect([...there.notMoved, ...back.notMoved]).toEqual([]);
    expect(userPauses).toHaveLength(2 * userCount);
    expect(report.findings).toEqual([]);
    expect(report.ok).toBe(true);
    expect(run.sequenceGaps).toEqual([]);
    // Everyone is home again, under an epoch two moves later.
    for (const key of keys) {
      const entry = await directory.lookup(key.kind, key.id);
      expect(entry?.cellId).toBe(key.home);
      expect(entry?.epoch).toBe(3);
    }
  });

  it("moves a group out and back with a member added while it was away, who then gets every message after the join point, live", async () => {
    onTestFailed(printOutput);
    const directory = new DirectoryClient(nats as NatsConnection, topology().namespace, 5000);
    const urls = topology().topology.edges.map((edge) => edge.webSocketUrl);
    const [creatorId, memberId, addedId] = ["u090", "u091", "u092"] as const;
    // Their phones from the first test come back where they stopped.
    const reopen = (userId: string): Promise<RecordedDevice> => {
      const earlier = run.devices.filter((device) => device.userId === userId && device.deviceId === "phone").at(-1);
      return run.openDevice(userId, "phone", urls, earlier?.lastSeq());
    };
    const [creator, member, added] = [await reopen(creatorId), await reopen(memberId), await reopen(addedId)];
    const group = await creator.client.createGroup("away and back", [memberId]);
    const groupId = group.conversationId;
    run.conversation(groupId, [creatorId, memberId]);
    const home = (await directory.lookup("conversation", groupId))?.cellId;
    if (home === undefined) throw new Error(`no directory entry for ${groupId}`);
    const away = home === "a" ? "b" : "a";
    let sent = 0;
    const sendThree = async (label: string): Promise<void> => {
      for (let index = 0; index < 3; index++) await run.send(creator, groupId, `${label} ${index}`, `away-${label}-${sent++}`);
    };
    // Published at home first: the conversation's owner there now knows its members.
    await sendThree("home");
    await member.untilMessage(groupId, 3, settleDeadlineMs);
    expect((await migrateKey(migration(), "conversation", groupId, away)).toCellId).toBe(away);
    const grown = await creator.client.addMembers(groupId, [addedId]);
    expect(grown.memberUserIds).toContain(addedId);
    run.conversation(groupId, [creatorId, memberId, addedId]);
    await sendThree("away");
    expect((await migrateKey(migration(), "conversation", groupId, home)).toCellId).toBe(home);
    await sendThree("back");
    // The added member joined after seq 3, in the other cell; back home its messages still reach it live.
    await Promise.all([creator, member, added].map((device) => device.untilMessage(groupId, 9, settleDeadlineMs)));
    expect(
      added.events.flatMap(({ event }) => (event.kind === "joined" && event.conversationId === groupId ? [event.afterSeq] : [])),
    ).toEqual([3]);
    expect(added.messages.filter((message) => message.conversationId === groupId).map((message) => message.seq)).toEqual([
      4, 5, 6, 7, 8, 9,
    ]);
    await run.settle(settleDeadlineMs);
    const report = await run.check(testServices.postgresAdminUrl, topology().namespace, ["a", "b"]);
    expect(report.findings).toEqual([]);
    expect(run.sequenceGaps).toEqual([]);
  });

  it("adds cell c at runtime, then drains cell b under traffic and stops it, losing nothing", async () => {
    onTestFailed(printOutput);
    // Devices the first test left open (when it failed before settling) would feed the record twice.
    run.closeAll();
    const environment = { CELLWIRE_NAMESPACE: topology().namespace, ...topology().natsEnvironment("admin") };
    const added = await runCli(["add-cell", "c", "--workers", "1", "--weight", "100", "--json"], undefined, environment).done;
    expect(added.stderr).toContain("asking the local topology to start 1 workers of cell c");
    expect(added.status).toBe(0);
    expect(JSON.parse(added.stdout)).toMatchObject({ cellId: "c", state: "active", workerIds: ["c-1"] });

    // New users are placed on c too (by weight: a, b and c share them); some now live in b.
    const newcomers = Array.from({ length: 30 }, (_, index) => `n${String(index).padStart(3, "0")}`);
    const directory = new DirectoryClient(nats as NatsConnection, topology().namespace, 5000);
    const placed = await Promise.all(newcomers.map(async (userId) => (await directory.resolveUser(userId)).entry.cellId));
    expect(new Set(placed)).toContain("c");
    console.log(
      `drain: 30 new users placed after add-cell: a ${placed.filter((cell) => cell === "a").length}, b ${placed.filter((cell) => cell === "b").length}, c ${placed.filter((cell) => cell === "c").length}`,
    );

    const chat = await openChat(run, [...userIds.slice(0, 40), ...newcomers], "phone");
    let draining = true;
    const chatting = chatUntil(run, chat, "drain", () => !draining);
    let progressLines = 0;
    const drained = await runCli(
      ["drain", "b", "--json"],
      (stderr) => {
        progressLines = stderr.split("\n").filter((line) => line.startsWith("drain b: pass")).length;
      },
      environment,
    ).done.finally(() => {
      draining = false;
    });
    const { latenciesMs, rounds } = await chatting;
    expect(drained.stderr).toContain("draining cell b");
    expect(drained.status, drained.stderr).toBe(0);
    expect(progressLines).toBeGreaterThan(0);
    const drainSummary = JSON.parse(drained.stdout) as {
      movedUsers: number;
      movedConversations: number;
      elapsedMs: number;
      pauseP99Ms: number;
    };
    expect(drainSummary.movedUsers).toBeGreaterThanOrEqual(userCount / 2);

    // Nothing lives in b any more, and b gets nobody new.
    const cells = await directory.listCells();
    expect(cells.find((cell) => cell.cellId === "b")?.state).toBe("draining");
    for (const userId of [...userIds, ...newcomers]) expect((await directory.lookupUser(userId))?.cellId).not.toBe("b");
    expect((await directory.resolveUser("after-drain")).entry.cellId).not.toBe("b");

    // b's workers stop; everyone keeps chatting on a and c.
    await Promise.all(["cellwire-worker-b-1", "cellwire-worker-b-2"].map((name) => topology().topology.signal(name, "SIGTERM")));
    const after = await chatUntil(run, chat, "after", () => true);
    await run.settle(settleDeadlineMs);
    const report = await run.check(testServices.postgresAdminUrl, topology().namespace, ["a", "b", "c"]);
    console.log(
      [
        `drain: cell b drained in ${(drainSummary.elapsedMs / 1000).toFixed(1)} s under traffic (${rounds} chat rounds): ${drainSummary.movedUsers} users and ${drainSummary.movedConversations} conversations moved, write pause p99 ${drainSummary.pauseP99Ms} ms`,
        `drain: ${summary("send to ack during the drain", latenciesMs)}; ${after.rounds} rounds after b stopped`,
        `drain: checker: ${report.summary}`,
      ].join("\n"),
    );
    expect(report.findings).toEqual([]);
    expect(report.ok).toBe(true);
    expect(run.sequenceGaps).toEqual([]);
  });
});
