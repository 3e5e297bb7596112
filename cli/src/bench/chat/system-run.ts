// One system's part of a chat benchmark run, driven from the coordinator: connect every user through the
// load processes, create the conversations, then for each rate a warm-up and a measured window, the
// drain after it, and the merged figures. For Cellwire it ends with the history check: wait until the run
// is quiescent, dump the cell databases, and let the checker judge what the clients saw.
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { checkHistory, dumpCellDatabases, type CheckReport, type DatabaseSnapshot } from "@cellwire/loadtest";
import type { BenchOptions } from "./bench-options.ts";
import { positionsToReach, readRecordings, toHistoryRecord } from "./history-recording.ts";
import { LoadFleet } from "./load-fleet.ts";
import type { LoadUser } from "./load-messages.ts";
import {
  clockTicksPerSecond,
  machineCpuMsBetween,
  readMachineBusyTicks,
  sampleUsage,
  usageBetween,
  type UsageTarget,
} from "./process-usage.ts";
import { budgetBetween, sampleCounters } from "./service-counters.ts";
import { mergeRate, type RateResult } from "./rate-result.ts";
import type { CellwireSystem, PeerSystem, RunningSystem } from "./systems.ts";
import {
  continueAfter,
  onTimeDeliveryUsMax,
  planConversations,
  processOfUser,
  serverUrlsOfUser,
  userIdOf,
  type ConversationPlan,
} from "./workload.ts";

/** Connects in flight per load process: enough to connect 1000 users in seconds, few enough not to stall an edge. */
const connectsInFlightMax = 50;
const deviceId = "bench";
/** How far ahead of now a window starts, so every load process has its command before the first send. */
const windowLeadMs = 500;
/** Past the last intended send, a window waits this long for stragglers: the 5 s of "on time", plus a margin. */
const drainAfterLastSendMs = onTimeDeliveryUsMax / 1000 + 1000;
const progressIntervalMs = 100;
const setupDeadlineMs = 300_000;
const commandDeadlineMs = 30_000;
/** Sends still unanswered at the end wait this long (above the SDK's 10 s request timeout). */
const settleDeadlineMs = 30_000;
/** Each round gives the connections this long to read to the heads of the latest dump. */
const catchUpDeadlineMs = 30_000;
/**
 * How long the end of a run may take to come to rest: after an overload the cells keep working through
 * their backlog (retried relays, fan-out) long after the clients gave up on their sends.
 */
const restDeadlineMs = 60_000;
/** Rounds of dump, catch up and dump again come at most this often: a busy cell is not dumped back to back. */
const restRoundIntervalMs = 1000;

export type RunContext = {
  readonly options: BenchOptions;
  readonly runId: string;
  /** Progress for people: stderr. */
  readonly log: (line: string) => void;
  /** One JSON line of results: stdout. */
  readonly emit: (value: unknown) => void;
  /** Registers a cleanup to run however the run ends (Ctrl-C included). */
  readonly onCleanup: (cleanup: () => Promise<void>) => void;
};

export type SystemOutcome = {
  readonly results: RateResult[];
  /** Cellwire only. */
  readonly historyCheck?: CheckReport;
};

function wallNowUs(): number {
  return (performance.timeOrigin + performance.now()) * 1000;
}

/** Resolves at a wall-clock time (the window's schedule), at once when it has passed. */
function atWallTime(us: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, Math.max(0, (us - wallNowUs()) / 1000)));
}

function describeFailures(what: string, failed: number, firstError: string | null): string {
  return `${failed} ${what} failed; the first: ${firstError ?? "no reason given"}`;
}

/** Runs the whole workload against a started system; the fleet and the recordings are this function's to clean up. */
export async function runSystem(system: CellwireSystem | PeerSystem, context: RunContext): Promise<SystemOutcome> {
  const { options, log } = context;
  const plan = planConversations(options.users, options.group);
  const userIndexes = plan.flatMap((conversation) => conversation.memberUserIndexes);
  const recordingDirectory = system.system === "cellwire" ? mkdtempSync(join(tmpdir(), "cellwire-bench-recording-")) : undefined;
  const recordingPaths = Array.from({ length: options.loadProcesses }, (_, index) =>
    recordingDirectory === undefined ? null : join(recordingDirectory, `load-${index + 1}.tsv`),
  );
  const fleet = await LoadFleet.start({
    count: options.loadProcesses,
    ...(options.profileDirectory !== undefined && system.system === "cellwire" ? { profileDirectory: options.profileDirectory } : {}),
    onOutput: (processName, line) => log(`[${system.system} ${processName}] ${line}`),
  });
  const cleanup = async (): Promise<void> => {
    await fleet.stop();
    if (recordingDirectory !== undefined) rmSync(recordingDirectory, { recursive: true, force: true });
  };
  context.onCleanup(cleanup);
  try {
    const usersOf = (processIndex: number): LoadUser[] =>
      userIndexes
        .filter((userIndex) => processOfUser(userIndex, options.loadProcesses) === processIndex)
        .map((userIndex) => ({
          userIndex,
          userId: userIdOf(context.runId, userIndex),
          serverUrls: serverUrlsOfUser(userIndex, system.serverUrls),
        }));
    await fleet.all(
      (processIndex) => ({
        type: "setup",
        system: system.system,
        processIndex,
        processCount: options.loadProcesses,
        bodyBytes: options.bodyBytes,
        deviceId,
        recordingPath: recordingPaths[processIndex] ?? null,
        users: usersOf(processIndex),
      }),
      "setUp",
      commandDeadlineMs,
    );

    log(
      `${system.system}: connecting ${userIndexes.length} users over ${system.serverUrls.length} servers from ${options.loadProcesses} load processes…`,
    );
    const connectedAt = performance.now();
    const connected = await fleet.all(() => ({ type: "connect", connectsInFlightMax }), "connected", setupDeadlineMs);
    for (const reply of connected)
      if (reply.failed > 0) throw new Error(`${system.system}: ${describeFailures("connects", reply.failed, reply.firstError)}`);
    log(
      `${system.system}: ${userIndexes.length} users connected in ${((performance.now() - connectedAt) / 1000).toFixed(1)} s; creating ${plan.length} conversation${plan.length === 1 ? "" : "s"}…`,
    );

    const conversationIds = await createConversations(fleet, plan, context);
    const joined = await fleet.all(
      () => ({
        type: "join",
        conversations: plan.map((conversation) => ({
          index: conversation.index,
          conversationId: conversationIds[conversation.index] ?? "",
          memberUserIndexes: conversation.memberUserIndexes,
        })),
      }),
      "joined",
      setupDeadlineMs,
    );
    for (const reply of joined)
      if (reply.failed > 0) throw new Error(`${system.system}: ${describeFailures("joins", reply.failed, reply.firstError)}`);

    const usageTargets: UsageTarget[] = [
      ...system.usageTargets,
      ...fleet.processes.map(({ processName, pid }) => ({ name: processName, pids: () => [pid] })),
      { name: "bench-coordinator", pids: () => [process.pid] },
    ];
    const results: RateResult[] = [];
    for (const rate of options.rates) {
      const result = await runRate(fleet, rate, usageTargets, system, context);
      results.push(result);
      context.emit(result);
      if (!continueAfter(result, { explicitRates: options.explicitRates, keepGoing: options.keepGoing })) break;
    }

    if (system.system !== "cellwire") return { results };
    const historyCheck = await checkCellwireHistory(system, fleet, {
      context,
      conversationIds,
      userIndexes,
      recordingPaths: recordingPaths.filter((path): path is string => path !== null),
    });
    return { results, historyCheck };
  } finally {
    await cleanup();
  }
}

/** Each conversation is created by its first member's process; resolves with the ids by conversation index. */
async function createConversations(fleet: LoadFleet, plan: readonly ConversationPlan[], context: RunContext): Promise<string[]> {
  const { options } = context;
  const replies = await fleet.all(
    (processIndex) => ({
      type: "create",
      conversations: plan
        .filter((conversation) => processOfUser(conversation.memberUserIndexes[0] ?? 0, options.loadProcesses) === processIndex)
        .map((conversation) => ({
          index: conversation.index,
          memberUserIds: conversation.memberUserIndexes.map((userIndex) => userIdOf(context.runId, userIndex)),
        })),
    }),
    "created",
    setupDeadlineMs,
  );
  const conversationIds: string[] = [];
  for (const reply of replies) {
    if (reply.failed > 0) throw new Error(describeFailures("conversation creations", reply.failed, reply.firstError));
    for (const { index, conversationId } of reply.conversations) conversationIds[index] = conversationId;
  }
  const lacking = plan.filter((conversation) => conversationIds[conversation.index] === undefined);
  if (lacking.length > 0) throw new Error(`${lacking.length} conversations got no id (the first: ${String(lacking[0]?.index)})`);
  return conversationIds;
}

async function runRate(
  fleet: LoadFleet,
  rate: number,
  usageTargets: readonly UsageTarget[],
  system: CellwireSystem | PeerSystem,
  context: RunContext,
): Promise<RateResult> {
  const { options, log } = context;
  const startUs = Math.round(wallNowUs() + windowLeadMs * 1000);
  const measureStartUs = startUs + options.warmupS * 1e6;
  const endUs = measureStartUs + options.durationS * 1e6;
  log(`${system.system}: ${rate} sends/s: ${options.warmupS} s of warm-up, then ${options.durationS} s measured…`);
  await fleet.all(
    () => ({ type: "window", rate, startUs, warmupS: options.warmupS, durationS: options.durationS }),
    "windowStarted",
    commandDeadlineMs,
  );

  // Postgres and NATS count what the window cost them (Cellwire only: the peer uses neither).
  const counterSource =
    system.system === "cellwire"
      ? {
          postgresAdminUrl: system.postgresAdminUrl,
          namespace: system.namespace,
          cellIds: system.cellIds,
          natsMonitorUrl: options.natsMonitorUrl,
        }
      : undefined;
  await atWallTime(measureStartUs);
  // The window on the monotonic clock of V8's CPU profiles, for profile-summary.ts --window.
  const windowMonotonicStartUs = process.hrtime.bigint() / 1000n;
  const machineAtStart = readMachineBusyTicks();
  const [usageAtStart, countersAtStart] = await Promise.all([
    sampleUsage(usageTargets),
    counterSource === undefined ? undefined : sampleCounters(counterSource),
  ]);
  await atWallTime(endUs);
  if (options.profileDirectory !== undefined)
    log(`${system.system}: ${rate} sends/s: profile window --window ${windowMonotonicStartUs}-${process.hrtime.bigint() / 1000n}`);
  const [usageAtEnd, countersAtEnd] = await Promise.all([
    sampleUsage(usageTargets),
    counterSource === undefined ? undefined : sampleCounters(counterSource),
  ]);
  const machineAtEnd = readMachineBusyTicks();
  const ticksPerSecond = clockTicksPerSecond();

  // The drain: until every window message reached every member and every send was answered, or the deadline.
  const drainDeadlineUs = endUs + drainAfterLastSendMs * 1000;
  for (;;) {
    const progress = await fleet.all(() => ({ type: "progress" }), "progress", commandDeadlineMs);
    const total = (field: "sent" | "settled" | "expected" | "delivered"): number => progress.reduce((sum, reply) => sum + reply[field], 0);
    const complete =
      progress.every((reply) => reply.sendingDone) && total("settled") === total("sent") && total("delivered") >= total("expected");
    if (complete || wallNowUs() >= drainDeadlineUs) break;
    await atWallTime(Math.min(drainDeadlineUs, wallNowUs() + progressIntervalMs * 1000));
  }
  const reports = await fleet.all(() => ({ type: "report" }), "report", commandDeadlineMs);
  const machineCpuMs = machineCpuMsBetween(machineAtStart, machineAtEnd, ticksPerSecond);
  const merged = mergeRate({
    system: system.system,
    group: options.group,
    rate,
    durationS: options.durationS,
    reports,
    usage: usageBetween(usageAtStart, usageAtEnd, ticksPerSecond),
    machineCpuMs,
  });
  if (countersAtStart === undefined || countersAtEnd === undefined) return merged;
  return { ...merged, budget: budgetBetween(countersAtStart, countersAtEnd, merged.acked) };
}

function samePositions(
  left: readonly { userIndex: number; position: number }[],
  right: readonly { userIndex: number; position: number }[],
): boolean {
  return (
    left.length === right.length &&
    left.every((entry, index) => entry.userIndex === right[index]?.userIndex && entry.position === right[index]?.position)
  );
}

type HistoryInput = {
  readonly context: RunContext;
  readonly conversationIds: readonly string[];
  readonly userIndexes: readonly number[];
  readonly recordingPaths: readonly string[];
};

/**
 * Brings the run to rest (every send answered, every connection read to its head) and checks its history.
 * A run that does not come to rest is still checked, as incomplete: the checker then only judges what
 * arrived, and the summary says so.
 */
async function checkCellwireHistory(system: CellwireSystem, fleet: LoadFleet, input: HistoryInput): Promise<CheckReport> {
  const { context } = input;
  const { options, log } = context;
  log("cellwire: history check: waiting for every send to be answered…");
  const settled = await fleet.all(
    () => ({ type: "settle", deadlineMs: settleDeadlineMs }),
    "settled",
    settleDeadlineMs + commandDeadlineMs,
  );
  const pending = settled.reduce((sum, reply) => sum + reply.pending, 0);
  const userIds = new Map(input.userIndexes.map((userIndex) => [userIndex, userIdOf(context.runId, userIndex)]));
  const userIndexOf = new Map([...userIds].map(([userIndex, userId]) => [userId, userIndex]));
  const dump = (): Promise<DatabaseSnapshot> =>
    dumpCellDatabases({ postgresAdminUrl: system.postgresAdminUrl, namespace: system.namespace, cellIds: system.cellIds });

  // At rest: nothing unanswered, every connection read to the head of its mailbox, and no head moved
  // between two dumps with a catch-up between them. Sends the SDK never answered rule it out at once.
  const restDeadline = performance.now() + restDeadlineMs;
  let heads = positionsToReach(await dump(), userIndexOf);
  let atRest = false;
  for (let round = 1; pending === 0 && !atRest && performance.now() < restDeadline; round++) {
    const roundStartedAt = performance.now();
    const positions = heads;
    // One line now and then: an overloaded run takes dozens of rounds to drain.
    const loud = round === 1 || round % 10 === 0;
    if (loud) log(`cellwire: history check: every connection reading to its head (round ${round})…`);
    const caughtUp = await fleet.all(
      (processIndex) => ({
        type: "catchUp",
        deadlineMs: catchUpDeadlineMs,
        positions: positions.filter(({ userIndex }) => processOfUser(userIndex, options.loadProcesses) === processIndex),
      }),
      "caughtUp",
      catchUpDeadlineMs + commandDeadlineMs,
    );
    const behind = caughtUp.reduce((sum, reply) => sum + reply.behind, 0);
    heads = positionsToReach(await dump(), userIndexOf);
    const moved = !samePositions(positions, heads);
    atRest = behind === 0 && !moved;
    if (!atRest) {
      if (loud)
        log(`cellwire: history check: not at rest yet (${behind} connections behind their heads${moved ? ", heads still moving" : ""})`);
      await new Promise((resolve) => setTimeout(resolve, Math.max(0, roundStartedAt + restRoundIntervalMs - performance.now())));
    }
  }
  if (pending > 0) log(`cellwire: history check: ${pending} sends were never answered; checking the run as incomplete`);
  // The recording stops first and the databases are read after it: every event a device recorded was
  // committed before it was delivered, so the dump holds it, whether or not the run came to rest.
  await fleet.all(() => ({ type: "finish" }), "finished", commandDeadlineMs);
  const database = await dump();
  const quiescent = atRest && samePositions(heads, positionsToReach(database, userIndexOf));
  const recording = await readRecordings(input.recordingPaths);
  const record = toHistoryRecord(
    recording,
    { userIds, deviceId, conversationIds: input.conversationIds, bodyBytes: options.bodyBytes },
    database,
    quiescent,
  );
  return checkHistory(record);
}
