// The connections benchmark's figures, one JSON line per measurement, computed from what the load
// processes answered and what /proc and the edge's inspector said. Pure: the coordinator gathers, these
// functions compute, and the tests check them on made-up input.
import { percentile } from "../../statistics.ts";
import { decodeHistogram, mergeHistograms, summariseMs, type LatencySummaryMs } from "../chat/latency-histogram.ts";
import type { ProcessUsage } from "../chat/process-usage.ts";
import type { ResyncReport, SessionsOpened } from "./connections-messages.ts";
import type { HeapFigures } from "./edge-inspector.ts";

/** The machine's load average (1, 5 and 15 minutes) when a figure was taken: the machine is shared. */
export type LoadAverage = readonly [number, number, number];

/** The edge process's memory at one moment: RSS from /proc, V8's figures from the inspector. */
export type MemorySample = { readonly rssBytes: number; readonly heap: HeapFigures | undefined };

export type MemoryLine = {
  readonly measurement: "memory";
  /**
   * "sessions": authenticated and synced, idle; "elsewhere": the other edge while those sessions are open
   * (it holds a presence claim per user online anywhere); "silent": upgraded sockets that never said
   * hello (the uWS baseline).
   */
  readonly kind: "sessions" | "elsewhere" | "silent";
  readonly edge: string;
  readonly socketsAsked: number;
  /** Sockets still open when the edge was measured (a census of the load processes). */
  readonly socketsOpen: number;
  readonly failed: number;
  readonly firstError: string | null;
  readonly rssBeforeBytes: number;
  readonly rssAfterBytes: number;
  readonly rssSettledBytes: number;
  /** (after − before) / sockets open, with after read right after the last socket was in. */
  readonly rssBytesPerSocket: number;
  /** The same after a full GC and a pause (V8 gives some pages back). */
  readonly rssSettledBytesPerSocket: number;
  /** V8 heap in use after a full GC, per socket (live objects only); null without the inspector. */
  readonly heapUsedBytesPerSocket: number | null;
  /** C++ memory bound to JS objects, per socket, after the GC; null without the inspector. */
  readonly externalBytesPerSocket: number | null;
  readonly loadAverage: LoadAverage;
};

function round(value: number, digits = 0): number {
  const scale = 10 ** digits;
  return Math.round(value * scale) / scale;
}

export function memoryLine(input: {
  readonly kind: MemoryLine["kind"];
  readonly edge: string;
  readonly socketsAsked: number;
  readonly socketsOpen: number;
  readonly failed: number;
  readonly firstError: string | null;
  readonly before: MemorySample;
  readonly after: MemorySample;
  readonly settled: MemorySample;
  readonly loadAverage: LoadAverage;
}): MemoryLine {
  const { before, after, settled } = input;
  const perSocket = (bytes: number): number => (input.socketsOpen === 0 ? 0 : round(bytes / input.socketsOpen));
  const heapPerSocket = (field: "heapUsedBytes" | "externalBytes"): number | null =>
    before.heap === undefined || settled.heap === undefined ? null : perSocket(settled.heap[field] - before.heap[field]);
  return {
    measurement: "memory",
    kind: input.kind,
    edge: input.edge,
    socketsAsked: input.socketsAsked,
    socketsOpen: input.socketsOpen,
    failed: input.failed,
    firstError: input.firstError,
    rssBeforeBytes: before.rssBytes,
    rssAfterBytes: after.rssBytes,
    rssSettledBytes: settled.rssBytes,
    rssBytesPerSocket: perSocket(after.rssBytes - before.rssBytes),
    rssSettledBytesPerSocket: perSocket(settled.rssBytes - before.rssBytes),
    heapUsedBytesPerSocket: heapPerSocket("heapUsedBytes"),
    externalBytesPerSocket: heapPerSocket("externalBytes"),
    loadAverage: input.loadAverage,
  };
}

/** CPU of one process (or group) over a measurement, and per operation (connect, resync). */
export type ProcessCpu = { readonly name: string; readonly cpuMs: number; readonly cpuUsPerOperation: number | null };

export function cpuPerOperation(usage: readonly ProcessUsage[], operations: number): ProcessCpu[] {
  return usage.map((process) => ({
    name: process.name,
    cpuMs: round(process.cpuMs),
    cpuUsPerOperation: operations === 0 ? null : round((process.cpuMs * 1000) / operations),
  }));
}

export type ConnectsLine = {
  readonly measurement: "connects";
  readonly users: "first-time" | "returning";
  readonly edge: string;
  readonly connects: number;
  readonly failed: number;
  readonly firstError: string | null;
  /** Connects in flight at most, over all load processes. */
  readonly inFlightMax: number;
  /** From the first socket requested to the last session synced. */
  readonly durationS: number;
  /** Sessions synced per second over durationS. */
  readonly admittedPerS: number;
  readonly welcomeMs: LatencySummaryMs | null;
  readonly syncedMs: LatencySummaryMs | null;
  /** CPU per process over the measurement; cpuUsPerOperation is per connect. */
  readonly processes: readonly ProcessCpu[];
  /** CPU of every process but the load generator, per connect. */
  readonly serverCpuUsPerConnect: number | null;
  /** Busy CPU of the whole machine over the measurement (all cores). */
  readonly machineCpuMs: number | null;
  readonly loadAverage: LoadAverage;
};

/**
 * The warm-up's returning rounds (untimed, before the timed passes): at least warmUpRoundsMin, then more
 * until a round's machine CPU per connect is within warmUpSettledShare of the round before, at most
 * warmUpRoundsMax. One round was not enough: a perf profile of a worker during the timed returning pass
 * after one round had a quarter of its CPU in V8's optimizing compiler, and the workers' CPU per returning
 * connect kept falling with more rounds (79–82 µs after 1, 68 after 2, 55–63 after 4, 49 after 8).
 */
export const warmUpRoundsMin = 2;
export const warmUpRoundsMax = 8;
export const warmUpSettledShare = 0.05;

/** One untimed round of the warm-up: the machine's busy CPU per connect, null where /proc could not tell. */
export type WarmUpRound = {
  readonly users: "first-time" | "returning";
  readonly connects: number;
  readonly machineCpuUsPerConnect: number | null;
};

/** A warm-up round's figures from its replies and the machine's busy CPU over it (as connectsLine counts them). */
export function warmUpRound(input: {
  readonly users: WarmUpRound["users"];
  readonly replies: readonly Pick<SessionsOpened, "opened">[];
  readonly machineCpuMs: number | null;
}): WarmUpRound {
  const connects = openedConnects(input.replies);
  const machineCpuUsPerConnect = input.machineCpuMs === null || connects === 0 ? null : round((input.machineCpuMs * 1000) / connects);
  return { users: input.users, connects, machineCpuUsPerConnect };
}

/**
 * Whether the warm-up's returning rounds so far are enough (see warmUpRoundsMin). Without a machine
 * figure convergence cannot be told, so the minimum is taken.
 */
export function warmUpSettled(returningRounds: readonly WarmUpRound[]): boolean {
  const count = returningRounds.length;
  if (count < warmUpRoundsMin) return false;
  if (count >= warmUpRoundsMax) return true;
  const last = returningRounds[count - 1]?.machineCpuUsPerConnect ?? null;
  const before = returningRounds[count - 2]?.machineCpuUsPerConnect ?? null;
  if (last === null || before === null || before <= 0) return true;
  return Math.abs(last - before) <= before * warmUpSettledShare;
}

function openedConnects(replies: readonly Pick<SessionsOpened, "opened">[]): number {
  return replies.reduce((sum, reply) => sum + reply.opened, 0);
}

/** Load processes and the coordinator: the load generator, not the system measured. */
export function isLoadGenerator(name: string): boolean {
  return name.startsWith("load-") || name === "bench-coordinator";
}

export function connectsLine(input: {
  readonly users: ConnectsLine["users"];
  readonly edge: string;
  readonly inFlightMax: number;
  readonly replies: readonly (SessionsOpened & { readonly failed: number; readonly firstError: string | null })[];
  readonly usage: readonly ProcessUsage[];
  readonly machineCpuMs: number | null;
  readonly loadAverage: LoadAverage;
}): ConnectsLine {
  const connects = openedConnects(input.replies);
  const failed = input.replies.reduce((sum, reply) => sum + reply.failed, 0);
  const startedAtUs = Math.min(...input.replies.map((reply) => reply.startedAtUs));
  const finishedAtUs = Math.max(...input.replies.map((reply) => reply.finishedAtUs));
  const durationS = input.replies.length === 0 ? 0 : Math.max(0, finishedAtUs - startedAtUs) / 1e6;
  const summary = (field: "welcomeHistogram" | "syncedHistogram"): LatencySummaryMs | null =>
    summariseMs(mergeHistograms(input.replies.map((reply) => decodeHistogram(reply[field])))) ?? null;
  const processes = cpuPerOperation(input.usage, connects);
  const serverCpuMs = input.usage.filter((process) => !isLoadGenerator(process.name)).reduce((sum, process) => sum + process.cpuMs, 0);
  return {
    measurement: "connects",
    users: input.users,
    edge: input.edge,
    connects,
    failed,
    firstError: input.replies.find((reply) => reply.firstError !== null)?.firstError ?? null,
    inFlightMax: input.inFlightMax,
    durationS: round(durationS, 3),
    admittedPerS: durationS === 0 ? 0 : round(connects / durationS),
    welcomeMs: summary("welcomeHistogram"),
    syncedMs: summary("syncedHistogram"),
    processes,
    serverCpuUsPerConnect: connects === 0 ? null : round((serverCpuMs * 1000) / connects),
    machineCpuMs: input.machineCpuMs === null ? null : round(input.machineCpuMs),
    loadAverage: input.loadAverage,
  };
}

/** Clients whose time fell in [fromMs, toMs); toMs null: the open-ended last bucket. */
export type SpreadBucket = { readonly fromMs: number; readonly toMs: number | null; readonly clients: number };

/**
 * How a wave spread over time: the finite times in `bucketCount` buckets of `bucketMs` from 0, the last
 * one open-ended (everything from its start on). NaN (no such time by the deadline) is left out.
 */
export function spreadHistogram(timesMs: Iterable<number>, bucketMs: number, bucketCount: number): SpreadBucket[] {
  const counts = new Array<number>(bucketCount).fill(0);
  for (const timeMs of timesMs) {
    if (!Number.isFinite(timeMs)) continue;
    const index = Math.min(bucketCount - 1, Math.max(0, Math.floor(timeMs / bucketMs)));
    counts[index] = (counts[index] ?? 0) + 1;
  }
  return counts.map((clients, index) => ({
    fromMs: index * bucketMs,
    toMs: index === bucketCount - 1 ? null : (index + 1) * bucketMs,
    clients,
  }));
}

/** The buckets of the kill's histograms: the SDK's failover window is 0-250 ms, a resync takes seconds. */
export const reconnectBucketMs = 25;
export const reconnectBucketCount = 21;
export const resyncBucketMs = 500;
export const resyncBucketCount = 21;

export type KillLine = {
  readonly measurement: "kill";
  readonly killedEdge: string;
  readonly survivingEdge: string;
  readonly clients: number;
  /** Clients synced on the other edge within the deadline, and how many were not. */
  readonly resynced: number;
  readonly notResynced: number;
  readonly deadlineS: number;
  /** From the kill to each client's next `synced` on the other edge. */
  readonly p50Ms: number | null;
  readonly p90Ms: number | null;
  readonly p99Ms: number | null;
  readonly maxMs: number | null;
  /** Clients by connection attempts after the kill: 1 went straight to the other edge. */
  readonly attempts: { readonly one: number; readonly two: number; readonly more: number };
  /** From the kill to each client's first connection attempt, per 25 ms: how the SDK spread the wave. */
  readonly reconnectSpread: readonly SpreadBucket[];
  /** From the kill to each client's next `synced`, per 500 ms: how the surviving edge took the wave. */
  readonly resyncSpread: readonly SpreadBucket[];
  /** Clients whose first attempt after the kill failed, by why: a WebSocket close code, or "no close code". */
  readonly firstFailures: Readonly<Record<string, number>>;
  /** CPU per process from the kill to the last resync (or the deadline); cpuUsPerOperation is per resync. */
  readonly processes: readonly ProcessCpu[];
  readonly machineCpuMs: number | null;
  readonly loadAverage: LoadAverage;
};

export function killLine(input: {
  readonly killedEdge: string;
  readonly survivingEdge: string;
  readonly deadlineS: number;
  readonly reports: readonly ResyncReport[];
  readonly usage: readonly ProcessUsage[];
  readonly machineCpuMs: number | null;
  readonly loadAverage: LoadAverage;
}): KillLine {
  const delays = input.reports.flatMap((report) => [...report.delaysMs]);
  const resynced = delays.filter((delay) => Number.isFinite(delay));
  const attempts = input.reports.flatMap((report) => [...report.attempts]);
  const firstFailures: Record<string, number> = {};
  for (const report of input.reports) {
    for (const failure of report.firstFailures) {
      if (failure === 0) continue;
      const reason = failure === 1 ? "no close code" : String(failure);
      firstFailures[reason] = (firstFailures[reason] ?? 0) + 1;
    }
  }
  const figure = (p: number): number | null => {
    const value = percentile(resynced, p);
    return value === undefined ? null : round(value, 1);
  };
  return {
    measurement: "kill",
    killedEdge: input.killedEdge,
    survivingEdge: input.survivingEdge,
    clients: delays.length,
    resynced: resynced.length,
    notResynced: delays.length - resynced.length,
    deadlineS: input.deadlineS,
    p50Ms: figure(50),
    p90Ms: figure(90),
    p99Ms: figure(99),
    maxMs: resynced.length === 0 ? null : round(Math.max(...resynced), 1),
    attempts: {
      one: attempts.filter((count) => count <= 1).length,
      two: attempts.filter((count) => count === 2).length,
      more: attempts.filter((count) => count > 2).length,
    },
    firstFailures,
    reconnectSpread: spreadHistogram(
      input.reports.flatMap((report) => [...report.reconnectDelaysMs]),
      reconnectBucketMs,
      reconnectBucketCount,
    ),
    resyncSpread: spreadHistogram(resynced, resyncBucketMs, resyncBucketCount),
    processes: cpuPerOperation(input.usage, resynced.length),
    machineCpuMs: input.machineCpuMs === null ? null : round(input.machineCpuMs),
    loadAverage: input.loadAverage,
  };
}
