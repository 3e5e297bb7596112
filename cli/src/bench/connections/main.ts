// The connections benchmark (issue 9, item 5): what a connection costs an edge. On the `npm start`
// topology, started on a fresh namespace, it measures
//   memory:   the edge's RSS (and V8 heap, through its inspector) per idle authenticated session, and per
//             silent socket (no hello) as the uWS baseline;
//   connects: authenticated connects per second an edge admits, first-time users then the same users
//             returning, with times to welcome and to synced and CPU per connect per process;
//   kill:     SDK clients synced on edge 1, edge 1 SIGKILLed, each client's time to its next `synced` on
//             edge 2.
// Prints one JSON line per measurement on stdout (progress on stderr) and writes the markdown report.
//
//   npm run bench:connections -- [--measurements memory,connects,kill] [--sockets 5000] [--connects 10000]
//                                [--users 6000] …   (--help for all)
//
// Everything it starts (servers, load processes) is stopped and everything it made on the shared services
// removed at the end, on an error and on Ctrl-C.
import { randomBytes } from "node:crypto";
import { mkdir, writeFile } from "node:fs/promises";
import { loadavg } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { sleep } from "@cellwire/cluster";
import { servicesToCheck, unreachableServices } from "../../preflight.ts";
import type { EdgeAddress } from "../../topology.ts";
import {
  clockTicksPerSecond,
  machineCpuMsBetween,
  readMachineBusyTicks,
  readRssBytes,
  sampleUsage,
  usageBetween,
  type UsageTarget,
} from "../chat/process-usage.ts";
import { commandLine, describeCommit, describeMachine } from "../chat/report.ts";
import { startCellwire, type CellwireSystem } from "../chat/systems.ts";
import { ProcessFleet } from "../process-fleet.ts";
import { decodeConnectionsReply, type ConnectionsCommand, type ConnectionsReply } from "./connections-messages.ts";
import { parseConnectionsOptions, usage, type ConnectionsOptions } from "./connections-options.ts";
import { renderConnectionsReport } from "./connections-report.ts";
import {
  connectsLine,
  killLine,
  memoryLine,
  reconnectBucketMs,
  warmUpRound,
  warmUpSettled,
  type ConnectsLine,
  type KillLine,
  type LoadAverage,
  type MemoryLine,
  type MemorySample,
  type WarmUpRound,
} from "./connections-results.ts";
import { InspectorSession, inspectorUrlOf } from "./edge-inspector.ts";
import { createRunIssuer, type RunIssuer } from "./run-issuer.ts";

const repositoryRoot = fileURLToPath(new URL("../../../../", import.meta.url));
const loadProcessEntry = fileURLToPath(new URL("./connections-load-process.ts", import.meta.url));
const natsServers = ["127.0.0.1:4222"];
const redisUrl = "redis://127.0.0.1:6379";
const deviceId = "bench";
const killedEdgeProcess = "cellwire-edge-1";

/**
 * Users connected first-time and then returning before the timed connects (as many as the timed passes
 * connect, up to this), so that no pass pays JIT compilation: with 1,000 the workers' page path was still
 * compiling during the returning pass (their CPU per returning connect 134–137 µs; with 10,000, 86–87).
 * The returning rounds repeat until the machine's CPU per connect settles (warmUpSettled).
 */
const connectsWarmUpUsersMax = 10_000;
/** Silent sockets must outlive their measurement: the edge closes a socket without hello at this deadline. */
const helloDeadlineMs = 60_000;
/** Sockets opened at once per load process for the memory measurement (its speed is not measured). */
const memoryInFlightPerProcess = 100;
/** SDK clients connecting at once per load process before the kill. */
const clientsInFlightPerProcess = 50;
const commandDeadlineMs = 30_000;
const openDeadlineMs = 300_000;
const closeDeadlineMs = 30_000;
/** After a full GC, RSS is read after this pause (V8 returns pages to the system in the background). */
const settlePauseMs = 1000;
const drainDeadlineMs = 60_000;

type Fleet = ProcessFleet<ConnectionsCommand, ConnectionsReply>;

function log(line: string): void {
  process.stderr.write(`${line}\n`);
}

function emit(value: unknown): void {
  process.stdout.write(`${JSON.stringify(value)}\n`);
}

function wallNowUs(): number {
  return (performance.timeOrigin + performance.now()) * 1000;
}

function loadAverage(): LoadAverage {
  const [one = 0, five = 0, fifteen = 0] = loadavg();
  return [one, five, fifteen];
}

/** Cleanups run last-registered first, each once, whichever way the run ends. */
class Cleanups {
  private readonly pending: (() => Promise<void>)[] = [];
  private running: Promise<void> | undefined;

  add(cleanup: () => Promise<void>): void {
    this.pending.push(cleanup);
  }

  runAll(): Promise<void> {
    this.running ??= (async () => {
      for (let cleanup = this.pending.pop(); cleanup !== undefined; cleanup = this.pending.pop()) {
        await cleanup().catch((error: unknown) => log(`cleanup: ${error instanceof Error ? error.message : String(error)}`));
      }
    })();
    return this.running;
  }
}

/** User i goes to load process i % n. */
function usersOf(prefix: string, count: number, processIndex: number, processCount: number): string[] {
  const userIds: string[] = [];
  for (let index = processIndex; index < count; index += processCount) userIds.push(`${prefix}${index}`);
  return userIds;
}

/** `count` split over the processes as evenly as possible. */
function shareOf(count: number, processIndex: number, processCount: number): number {
  return Math.floor(count / processCount) + (processIndex < count % processCount ? 1 : 0);
}

/** The sessions an edge holds now, from its /healthz. */
async function edgeSessionCount(edge: EdgeAddress): Promise<number> {
  const response = await fetch(new URL("healthz", edge.httpUrl), { signal: AbortSignal.timeout(5000) });
  const body: unknown = await response.json();
  const sessions = typeof body === "object" && body !== null && "sessions" in body ? body.sessions : undefined;
  if (typeof sessions !== "number") throw new Error(`${edge.httpUrl}healthz has no session count`);
  return sessions;
}

/** Waits until the edge holds no session (the closes of a pass are processed) so passes do not overlap. */
async function untilEdgeDrained(edge: EdgeAddress): Promise<void> {
  const deadline = performance.now() + drainDeadlineMs;
  for (;;) {
    const sessions = await edgeSessionCount(edge);
    if (sessions === 0) return;
    if (performance.now() > deadline)
      throw new Error(`edge ${edge.edgeId} still holds ${sessions} sessions ${drainDeadlineMs} ms after its sockets closed`);
    await sleep(100);
  }
}

type RunState = {
  readonly options: ConnectionsOptions;
  readonly runId: string;
  readonly system: CellwireSystem;
  readonly fleet: Fleet;
  /** The run's own issuer with --tokens <algorithm>; undefined: dev tokens. */
  readonly issuer: RunIssuer | undefined;
  readonly usageTargets: readonly UsageTarget[];
  readonly inspectorUrls: ReadonlyMap<string, string>;
  readonly expectKill: () => void;
};

function edgeAt(system: CellwireSystem, index: number): { edge: EdgeAddress; processName: string } {
  const edge = system.topology.edges[index];
  if (edge === undefined) throw new Error(`the topology has no edge ${index + 1}`);
  return { edge, processName: `cellwire-edge-${edge.edgeId}` };
}

function pidOf(system: CellwireSystem, processName: string): number {
  const pid = system.topology.processes().find((running) => running.processName === processName)?.pid;
  if (pid === undefined) throw new Error(`${processName} is not running`);
  return pid;
}

async function prepare(state: RunState, prefix: string, count: number): Promise<void> {
  const { fleet, options, issuer } = state;
  const replies = await fleet.all(
    (processIndex) => ({
      type: "prepare",
      userIds: usersOf(prefix, count, processIndex, options.loadProcesses),
      deviceId,
      issuerKey: issuer?.issuerKey,
    }),
    "prepared",
    openDeadlineMs,
  );
  log(`  ${count} tokens signed in ${Math.round(Math.max(...replies.map((reply) => reply.signMs)))} ms`);
}

async function closeSockets(state: RunState, edge: EdgeAddress): Promise<void> {
  const closed = await state.fleet.all(
    () => ({ type: "closeSockets", deadlineMs: closeDeadlineMs }),
    "socketsClosed",
    closeDeadlineMs + commandDeadlineMs,
  );
  const stillOpen = closed.reduce((sum, reply) => sum + reply.stillOpen, 0);
  if (stillOpen > 0) log(`  ${stillOpen} sockets did not close in time and were cut`);
  await untilEdgeDrained(edge);
}

// ---------------------------------------------------------------------------------------------------
// memory

async function memorySample(pid: number, inspector: InspectorSession | undefined, collect: boolean): Promise<MemorySample> {
  if (collect && inspector !== undefined) {
    await inspector.collectGarbage();
    await inspector.collectGarbage();
    await sleep(settlePauseMs);
  }
  const rssBytes = readRssBytes(pid);
  if (rssBytes === undefined) throw new Error(`cannot read the RSS of pid ${pid}`);
  return { rssBytes, heap: inspector === undefined ? undefined : await inspector.heapFigures() };
}

async function withInspector<T>(
  state: RunState,
  processName: string,
  run: (inspector: InspectorSession | undefined) => Promise<T>,
): Promise<T> {
  const url = state.inspectorUrls.get(processName);
  if (url === undefined) log(`  no inspector URL from ${processName}: RSS only`);
  const inspector = url === undefined ? undefined : await InspectorSession.connect(url);
  try {
    return await run(inspector);
  } finally {
    inspector?.close();
  }
}

async function measureMemory(state: RunState): Promise<MemoryLine[]> {
  const lines: MemoryLine[] = [];
  // The baseline first, on edge 2, which has held nothing yet: RSS a process freed is rarely given back,
  // so a measurement after another on the same edge would reuse its pages and read low.
  lines.push(await measureSilentSockets(state));
  emit(lines.at(-1));
  for (const line of await measureIdleSessions(state)) {
    lines.push(line);
    emit(line);
  }
  return lines;
}

function censusOf(
  options: ConnectionsOptions,
  census: readonly { readonly open: number }[],
  opened: readonly { readonly failed: number; readonly firstError: string | null }[],
): Pick<MemoryLine, "socketsAsked" | "socketsOpen" | "failed" | "firstError"> {
  return {
    socketsAsked: options.sockets,
    socketsOpen: census.reduce((sum, reply) => sum + reply.open, 0),
    failed: opened.reduce((sum, reply) => sum + reply.failed, 0),
    firstError: opened.find((reply) => reply.firstError !== null)?.firstError ?? null,
  };
}

async function measureSilentSockets(state: RunState): Promise<MemoryLine> {
  const { options, fleet, system } = state;
  const silentEdge = edgeAt(system, 1);
  log(`memory: ${options.sockets} silent sockets (no hello) on edge ${silentEdge.edge.edgeId}…`);
  const line = await withInspector(state, silentEdge.processName, async (inspector) => {
    const pid = pidOf(system, silentEdge.processName);
    const before = await memorySample(pid, inspector, true);
    const opened = await fleet.all(
      (processIndex) => ({
        type: "openSilent",
        url: silentEdge.edge.webSocketUrl,
        count: shareOf(options.sockets, processIndex, options.loadProcesses),
        inFlightMax: memoryInFlightPerProcess,
      }),
      "silentOpened",
      openDeadlineMs,
    );
    const after = await memorySample(pid, inspector, false);
    const census = await fleet.all(() => ({ type: "census" }), "censusTaken", commandDeadlineMs);
    const settled = await memorySample(pid, inspector, true);
    return memoryLine({
      kind: "silent",
      edge: silentEdge.edge.edgeId,
      ...censusOf(options, census, opened),
      before,
      after,
      settled,
      loadAverage: loadAverage(),
    });
  });
  await closeSockets(state, silentEdge.edge);
  return line;
}

/**
 * Idle sessions on edge 1, and what they cost edge 2, which holds a presence claim for every user online
 * anywhere (its RSS reuses the pages the silent sockets freed: read its heap figure).
 */
async function measureIdleSessions(state: RunState): Promise<MemoryLine[]> {
  const { options, fleet, system } = state;
  const sessionsEdge = edgeAt(system, 0);
  const otherEdge = edgeAt(system, 1);
  log(`memory: ${options.sockets} idle authenticated sessions on edge ${sessionsEdge.edge.edgeId}…`);
  await prepare(state, `${state.runId}-m`, options.sockets);
  const lines = await withInspector(state, sessionsEdge.processName, (inspector) =>
    withInspector(state, otherEdge.processName, async (otherInspector) => {
      const pid = pidOf(system, sessionsEdge.processName);
      const otherPid = pidOf(system, otherEdge.processName);
      const before = await memorySample(pid, inspector, true);
      const otherBefore = await memorySample(otherPid, otherInspector, true);
      if (inspector !== undefined && options.heapSnapshotDirectory !== undefined)
        await inspector.writeHeapSnapshot(join(options.heapSnapshotDirectory, `edge-before-${options.sockets}-sessions.heapsnapshot`));
      const opened = await fleet.all(
        () => ({ type: "openSessions", url: sessionsEdge.edge.webSocketUrl, inFlightMax: memoryInFlightPerProcess, resume: false }),
        "sessionsOpened",
        openDeadlineMs,
      );
      const after = await memorySample(pid, inspector, false);
      const otherAfter = await memorySample(otherPid, otherInspector, false);
      const census = await fleet.all(() => ({ type: "census" }), "censusTaken", commandDeadlineMs);
      const settled = await memorySample(pid, inspector, true);
      const otherSettled = await memorySample(otherPid, otherInspector, true);
      if (inspector !== undefined && options.heapSnapshotDirectory !== undefined)
        await inspector.writeHeapSnapshot(join(options.heapSnapshotDirectory, `edge-after-${options.sockets}-sessions.heapsnapshot`));
      const counts = censusOf(options, census, opened);
      return [
        memoryLine({ kind: "sessions", edge: sessionsEdge.edge.edgeId, ...counts, before, after, settled, loadAverage: loadAverage() }),
        memoryLine({
          kind: "elsewhere",
          edge: otherEdge.edge.edgeId,
          ...counts,
          before: otherBefore,
          after: otherAfter,
          settled: otherSettled,
          loadAverage: loadAverage(),
        }),
      ];
    }),
  );
  await closeSockets(state, sessionsEdge.edge);
  return lines;
}

// ---------------------------------------------------------------------------------------------------
// connects

async function measureConnects(state: RunState): Promise<{ readonly lines: ConnectsLine[]; readonly warmUp: WarmUpRound[] }> {
  const { options, fleet, system } = state;
  const { edge } = edgeAt(system, 0);
  const lines: ConnectsLine[] = [];
  log(`connects: ${options.connects} users to edge ${edge.edgeId}, ${options.inFlightPerProcess} in flight per load process…`);
  // Untimed first: the run's processes have just started, and the first connects of each kind would carry
  // their JIT compilation into the timed passes, which a serving edge and its workers did long ago. Since
  // decision 0043 a first-time user's hello reads no mailbox page, so without this the workers' page path
  // would compile during the returning pass.
  const openSessions = (resume: boolean) =>
    fleet.all(
      () => ({ type: "openSessions", url: edge.webSocketUrl, inFlightMax: options.inFlightPerProcess, resume }),
      "sessionsOpened",
      openDeadlineMs,
    );
  const warmUpUsers = Math.min(connectsWarmUpUsersMax, options.connects);
  await prepare(state, `${state.runId}-w`, warmUpUsers);
  const runWarmUpRound = async (users: WarmUpRound["users"], number: number): Promise<WarmUpRound> => {
    const machineAtStart = readMachineBusyTicks();
    const replies = await openSessions(users === "returning");
    const round = warmUpRound({
      users,
      replies,
      machineCpuMs: machineCpuMsBetween(machineAtStart, readMachineBusyTicks(), clockTicksPerSecond()),
    });
    log(
      `  warm-up round ${number}: ${round.connects} ${users}, untimed, ${round.machineCpuUsPerConnect ?? "–"} µs of machine CPU per connect`,
    );
    await closeSockets(state, edge);
    return round;
  };
  const firstTime = await runWarmUpRound("first-time", 1);
  const returning: WarmUpRound[] = [];
  do returning.push(await runWarmUpRound("returning", returning.length + 2));
  while (!warmUpSettled(returning));
  const warmUp = [firstTime, ...returning];
  await prepare(state, `${state.runId}-c`, options.connects);
  for (const users of ["first-time", "returning"] as const) {
    const ticksPerSecond = clockTicksPerSecond();
    const machineAtStart = readMachineBusyTicks();
    const usageAtStart = await sampleUsage(state.usageTargets);
    // The pass's window on the monotonic clock of V8's CPU profiles, for profile-summary.ts --window.
    const windowMonotonicStartUs = process.hrtime.bigint() / 1000n;
    const replies = await openSessions(users === "returning");
    if (options.profileDirectory !== undefined)
      log(`  ${users}: profile window --window ${windowMonotonicStartUs}-${process.hrtime.bigint() / 1000n}`);
    const usageAtEnd = await sampleUsage(state.usageTargets);
    const machineAtEnd = readMachineBusyTicks();
    const line = connectsLine({
      users,
      edge: edge.edgeId,
      inFlightMax: options.inFlightPerProcess * options.loadProcesses,
      replies,
      usage: usageBetween(usageAtStart, usageAtEnd, ticksPerSecond),
      machineCpuMs: machineCpuMsBetween(machineAtStart, machineAtEnd, ticksPerSecond),
      loadAverage: loadAverage(),
    });
    lines.push(line);
    emit(line);
    log(`  ${users}: ${line.connects} synced in ${line.durationS} s: ${line.admittedPerS}/s`);
    await closeSockets(state, edge);
  }
  return { lines, warmUp };
}

// ---------------------------------------------------------------------------------------------------
// kill

async function measureKill(state: RunState): Promise<KillLine> {
  const { options, fleet, system } = state;
  const killed = edgeAt(system, 0);
  const surviving = edgeAt(system, 1);
  log(`kill: ${options.users} SDK clients synced on edge ${killed.edge.edgeId}…`);
  await prepare(state, `${state.runId}-k`, options.users);
  const opened = await fleet.all(
    () => ({
      type: "openClients",
      urls: [killed.edge.webSocketUrl, surviving.edge.webSocketUrl],
      inFlightMax: clientsInFlightPerProcess,
      deadlineMs: openDeadlineMs,
    }),
    "clientsOpened",
    openDeadlineMs + commandDeadlineMs,
  );
  const failed = opened.reduce((sum, reply) => sum + reply.failed, 0);
  if (failed > 0)
    throw new Error(
      `kill: ${failed} SDK clients did not sync before the kill; the first: ${opened.find((reply) => reply.firstError !== null)?.firstError ?? "no reason given"}`,
    );
  const sessions = await edgeSessionCount(killed.edge);
  log(`  ${options.users} clients synced (edge ${killed.edge.edgeId} holds ${sessions} sessions); SIGKILL to ${killedEdgeProcess}…`);
  const ticksPerSecond = clockTicksPerSecond();
  const usageTargets = state.usageTargets.filter((target) => target.name !== killedEdgeProcess);
  const machineAtStart = readMachineBusyTicks();
  const usageAtStart = await sampleUsage(usageTargets);
  state.expectKill();
  const killedAtUs = wallNowUs();
  const exited = system.topology.signal(killedEdgeProcess, "SIGKILL");
  const reports = await fleet.all(
    () => ({
      type: "awaitResync",
      sinceUs: Math.round(killedAtUs),
      lostUrl: killed.edge.webSocketUrl,
      deadlineMs: options.resyncDeadlineS * 1000,
    }),
    "resynced",
    options.resyncDeadlineS * 1000 + commandDeadlineMs,
  );
  const usageAtEnd = await sampleUsage(usageTargets);
  const machineAtEnd = readMachineBusyTicks();
  await exited;
  const line = killLine({
    killedEdge: killed.edge.edgeId,
    survivingEdge: surviving.edge.edgeId,
    deadlineS: options.resyncDeadlineS,
    reports,
    usage: usageBetween(usageAtStart, usageAtEnd, ticksPerSecond),
    machineCpuMs: machineCpuMsBetween(machineAtStart, machineAtEnd, ticksPerSecond),
    loadAverage: loadAverage(),
  });
  emit(line);
  log(
    `  ${line.resynced} of ${line.clients} synced again on edge ${surviving.edge.edgeId}: p50 ${String(line.p50Ms)} ms, max ${String(line.maxMs)} ms`,
  );
  // The last bucket is open-ended (everything after the histogram's window), so it is not a 25 ms bucket.
  const closed = line.reconnectSpread.filter((bucket) => bucket.toMs !== null);
  const busiest = closed.reduce((most, bucket) => (bucket.clients > most.clients ? bucket : most), { fromMs: 0, clients: 0 });
  const later = line.reconnectSpread.filter((bucket) => bucket.toMs === null).reduce((sum, bucket) => sum + bucket.clients, 0);
  log(
    `  first reconnect attempts: the busiest ${reconnectBucketMs} ms of the wave (from ${busiest.fromMs} ms after the kill) took ${busiest.clients} of ${line.clients} clients; ${later} attempted after ${closed.length * reconnectBucketMs} ms`,
  );
  await fleet.all(() => ({ type: "closeClients" }), "clientsClosed", commandDeadlineMs);
  return line;
}

// ---------------------------------------------------------------------------------------------------

async function main(argv: readonly string[]): Promise<number> {
  if (argv.includes("--help") || argv.includes("-h")) {
    process.stdout.write(usage);
    return 0;
  }
  const parsed = parseConnectionsOptions(argv);
  if (!parsed.ok) {
    log(`bench:connections: ${parsed.message}\n\n${usage}`);
    return 2;
  }
  const { options } = parsed;
  const problems = await unreachableServices(servicesToCheck(natsServers, redisUrl, options.postgresAdminUrl));
  if (problems.length > 0) {
    log(`bench:connections: cannot run.\n${problems.map((problem) => `- ${problem}`).join("\n")}`);
    return 1;
  }
  if (options.heapSnapshotDirectory !== undefined) await mkdir(options.heapSnapshotDirectory, { recursive: true });

  const runId = `conn${Date.now().toString(36)}${randomBytes(2).toString("hex")}`;
  const cleanups = new Cleanups();
  const incidents: string[] = [];
  let interrupted = false;
  const interrupt = (signal: NodeJS.Signals): void => {
    if (interrupted) return;
    interrupted = true;
    log(`bench:connections: ${signal}: stopping every process and removing what the run made…`);
    void cleanups.runAll().then(() => process.exit(130));
  };
  process.on("SIGINT", interrupt);
  process.on("SIGTERM", interrupt);

  const date = new Date();
  const machine = describeMachine();
  machine.catch(() => undefined);
  const inspectorUrls = new Map<string, string>();
  let killExpected = false;
  try {
    const issuer = options.tokens === "dev" ? undefined : await createRunIssuer(options.tokens, runId);
    if (issuer !== undefined) cleanups.add(() => issuer.remove());
    log(
      `bench:connections: run ${runId}: starting Cellwire (directory, cells a and b with two workers each, two edges), ` +
        (issuer === undefined ? "dev tokens (ES256)…" : `edges in jwks mode, ${options.tokens} tokens…`),
    );
    const system = await startCellwire({
      namespace: runId,
      natsServers,
      redisUrl,
      postgresAdminUrl: options.postgresAdminUrl,
      profileDirectory: options.profileDirectory === undefined ? undefined : resolve(options.profileDirectory),
      extraEnvironment: { EDGE_AUTH_TIMEOUT_MS: String(helloDeadlineMs), ...issuer?.environment },
      // The inspector only where memory is measured: the V8 heap figures come through it.
      extraExecArgv: (processName) =>
        options.measurements.includes("memory") && processName.startsWith("cellwire-edge-") ? ["--inspect=127.0.0.1:0"] : [],
      onOutput: (processName, line) => {
        const url = inspectorUrlOf(line);
        if (url !== undefined) inspectorUrls.set(processName, url);
      },
      onUnexpectedExit: (message) => {
        if (killExpected && message.startsWith(`${killedEdgeProcess} `)) return;
        incidents.push(message);
        log(`bench:connections: ${message}`);
      },
    });
    cleanups.add(() => system.stop());
    const fleet = await ProcessFleet.start<ConnectionsCommand, ConnectionsReply>({
      entry: loadProcessEntry,
      decodeReply: decodeConnectionsReply,
      count: options.loadProcesses,
      ...(options.profileDirectory === undefined ? {} : { profileDirectory: resolve(options.profileDirectory) }),
      onOutput: (processName, line) => log(`[${processName}] ${line}`),
    });
    cleanups.add(() => fleet.stop());
    const state: RunState = {
      options,
      runId,
      system,
      fleet,
      issuer,
      usageTargets: [
        ...system.usageTargets,
        ...fleet.processes.map(({ processName, pid }) => ({ name: processName, pids: () => [pid] })),
        { name: "bench-coordinator", pids: () => [process.pid] },
      ],
      inspectorUrls,
      expectKill: () => {
        killExpected = true;
      },
    };
    let memory: MemoryLine[] = [];
    let connects: ConnectsLine[] = [];
    let warmUp: WarmUpRound[] = [];
    const kill: KillLine[] = [];
    try {
      if (options.measurements.includes("memory")) memory = await measureMemory(state);
      if (options.measurements.includes("connects")) ({ lines: connects, warmUp } = await measureConnects(state));
      if (options.measurements.includes("kill")) kill.push(await measureKill(state));
    } catch (error) {
      log(`bench:connections: the run failed; the servers' last output:\n${system.recentOutput().slice(-40).join("\n")}`);
      throw error;
    }
    await fleet.stop();
    await system.stop();

    const report = renderConnectionsReport({
      date,
      machine: await machine,
      commit: await describeCommit(repositoryRoot),
      command: commandLine(argv, "bench:connections"),
      options,
      memory,
      connects,
      warmUp,
      kill,
      incidents,
    });
    await mkdir(dirname(resolve(options.resultsPath)), { recursive: true });
    await writeFile(options.resultsPath, report);
    log(`bench:connections: report written to ${options.resultsPath}`);
    const everyClientBack = kill.every((line) => line.notResynced === 0);
    if (!everyClientBack) log("bench:connections: FAILED: some clients did not sync again on the other edge");
    return everyClientBack && incidents.length === 0 ? 0 : 1;
  } finally {
    await cleanups.runAll();
  }
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (error: unknown) => {
    log(`bench:connections: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}`);
    process.exit(1);
  },
);
