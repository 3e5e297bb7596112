// CPU, context switches and memory of the processes that work for a benchmark run, read from /proc (Linux
// only): CPU as utime + stime from /proc/<pid>/stat in clock ticks, context switches from the status of
// each of the process's threads (/proc/<pid>/task/<tid>/status), memory as VmRSS from /proc/<pid>/status.
// A named group can hold several pids (the Postgres backends of a run's cell databases), which are summed.
//
// A voluntary switch is a thread going to sleep (an event loop waiting in epoll, a backend waiting for its
// next statement), so each is one wake-up later: on these shared cores a wake-up, not the work it wakes
// for, is much of what a small batch costs (docs/performance.md). An involuntary switch is a thread
// preempted while it still had work: the cores were contended.
//
// Ticks are 10 ms on this kernel (CLK_TCK 100), so a figure over a window is good to about
// 10 ms × pids; over a 30 s window that is noise for any process that does real work.
import { execFileSync } from "node:child_process";
import { readdirSync, readFileSync } from "node:fs";

/** A group of processes measured together; `pids` is asked at every sample, so it may change. */
export type UsageTarget = { readonly name: string; readonly pids: () => readonly number[] | Promise<readonly number[]> };

/** Context switches of a process's threads, summed, since each thread started. */
export type ContextSwitches = { readonly voluntary: number; readonly involuntary: number };

/** CPU ticks and context switches per pid and the group's summed RSS, at one moment. */
export type GroupSample = {
  readonly ticksByPid: ReadonlyMap<number, number>;
  readonly switchesByPid: ReadonlyMap<number, ContextSwitches>;
  readonly rssBytes: number;
};
export type UsageSample = ReadonlyMap<string, GroupSample>;

export type ProcessUsage = {
  readonly name: string;
  /** CPU over the interval (user + system), in milliseconds. */
  readonly cpuMs: number;
  /** Resident memory at the end of the interval, in MiB (summed over the group's processes). */
  readonly rssMb: number;
  /** Processes of the group at the end. */
  readonly processCount: number;
  /** Voluntary context switches over the interval, every thread of the group's processes: its wake-ups. */
  readonly wakeUps: number;
  /** Involuntary context switches over the interval: its threads preempted while they had work. */
  readonly preemptions: number;
};

/** utime + stime of a /proc/<pid>/stat line; the command name may hold spaces and parentheses, so fields are counted after the last ")". */
export function parseCpuTicks(stat: string): number | undefined {
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  // After the name: state (0), ppid, pgrp, session, tty_nr, tpgid, flags, minflt, cminflt, majflt,
  // cmajflt, utime (11), stime (12).
  const user = Number(fields[11]);
  const system = Number(fields[12]);
  return Number.isSafeInteger(user) && Number.isSafeInteger(system) ? user + system : undefined;
}

/** VmRSS of a /proc/<pid>/status text, in bytes; undefined when absent (a zombie or a kernel thread). */
export function parseRssBytes(status: string): number | undefined {
  const match = /^VmRSS:\s+(\d+) kB$/m.exec(status);
  return match?.[1] === undefined ? undefined : Number(match[1]) * 1024;
}

/** The context switches of one thread's status text; undefined when its lines are absent. */
export function parseContextSwitches(status: string): ContextSwitches | undefined {
  const voluntary = /^voluntary_ctxt_switches:\s+(\d+)$/m.exec(status)?.[1];
  const involuntary = /^nonvoluntary_ctxt_switches:\s+(\d+)$/m.exec(status)?.[1];
  return voluntary === undefined || involuntary === undefined
    ? undefined
    : { voluntary: Number(voluntary), involuntary: Number(involuntary) };
}

function readProcFile(pid: number, file: string): string | undefined {
  try {
    return readFileSync(`/proc/${pid}/${file}`, "utf8");
  } catch {
    // The process exited between listing and reading: it has nothing more to count.
    return undefined;
  }
}

export function readCpuTicks(pid: number): number | undefined {
  const stat = readProcFile(pid, "stat");
  return stat === undefined ? undefined : parseCpuTicks(stat);
}

export function readRssBytes(pid: number): number | undefined {
  const status = readProcFile(pid, "status");
  return status === undefined ? undefined : parseRssBytes(status);
}

/**
 * Every thread's context switches of a process, summed (/proc/<pid>/status holds only its main thread's:
 * nats-server's goroutines and Node's helper threads switch on threads of their own). A thread that
 * exited inside an interval takes its switches with it.
 */
export function readContextSwitches(pid: number): ContextSwitches | undefined {
  let threads: string[];
  try {
    threads = readdirSync(`/proc/${pid}/task`);
  } catch {
    return undefined;
  }
  let voluntary = 0;
  let involuntary = 0;
  for (const thread of threads) {
    const status = readProcFile(pid, `task/${thread}/status`);
    const switches = status === undefined ? undefined : parseContextSwitches(status);
    if (switches === undefined) continue;
    voluntary += switches.voluntary;
    involuntary += switches.involuntary;
  }
  return { voluntary, involuntary };
}

let ticksPerSecondCache: number | undefined;

/** The kernel's clock ticks per second (`getconf CLK_TCK`, 100 on Linux). */
export function clockTicksPerSecond(): number {
  if (ticksPerSecondCache !== undefined) return ticksPerSecondCache;
  const output = execFileSync("getconf", ["CLK_TCK"], { encoding: "utf8" }).trim();
  const ticks = Number(output);
  if (!Number.isSafeInteger(ticks) || ticks < 1 || ticks > 1_000_000)
    throw new Error(`getconf CLK_TCK printed ${JSON.stringify(output.slice(0, 40))}, not a tick rate`);
  ticksPerSecondCache = ticks;
  return ticks;
}

/** The pids of every process whose command name (/proc/<pid>/comm) is `name`, lowest first. */
export function findProcessIdsByName(name: string): number[] {
  const pids: number[] = [];
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    const pid = Number(entry);
    if (readProcFile(pid, "comm")?.trimEnd() === name) pids.push(pid);
  }
  return pids.sort((left, right) => left - right);
}

/** Reads every target's processes now. */
export async function sampleUsage(targets: readonly UsageTarget[]): Promise<UsageSample> {
  // Pids first (some need a query), then every /proc read back to back, so the samples are close in time.
  const pidsByTarget = await Promise.all(targets.map(async (target) => [...(await target.pids())]));
  const sample = new Map<string, GroupSample>();
  targets.forEach((target, index) => {
    const ticksByPid = new Map<number, number>();
    const switchesByPid = new Map<number, ContextSwitches>();
    let rssBytes = 0;
    for (const pid of pidsByTarget[index] ?? []) {
      const ticks = readCpuTicks(pid);
      if (ticks === undefined) continue;
      ticksByPid.set(pid, ticks);
      const switches = readContextSwitches(pid);
      if (switches !== undefined) switchesByPid.set(pid, switches);
      rssBytes += readRssBytes(pid) ?? 0;
    }
    sample.set(target.name, { ticksByPid, switchesByPid, rssBytes });
  });
  return sample;
}

/** A counter's growth over an interval; all of it for a pid that started inside (no start reading). */
function grownSince(atEnd: number, atStart: number | undefined): number {
  return Math.max(0, atEnd - (atStart ?? 0));
}

/**
 * What each group used between two samples. A pid only in the end sample started inside the interval, so
 * all its ticks count; a pid gone by the end is lost (its last ticks are unknowable from /proc).
 */
export function usageBetween(start: UsageSample, end: UsageSample, ticksPerSecond: number): ProcessUsage[] {
  const usages: ProcessUsage[] = [];
  for (const [name, last] of end) {
    const first = start.get(name);
    let ticks = 0;
    for (const [pid, ticksAtEnd] of last.ticksByPid) ticks += grownSince(ticksAtEnd, first?.ticksByPid.get(pid));
    let wakeUps = 0;
    let preemptions = 0;
    for (const [pid, atEnd] of last.switchesByPid) {
      const atStart = first?.switchesByPid.get(pid);
      wakeUps += grownSince(atEnd.voluntary, atStart?.voluntary);
      preemptions += grownSince(atEnd.involuntary, atStart?.involuntary);
    }
    usages.push({
      name,
      cpuMs: (ticks * 1000) / ticksPerSecond,
      rssMb: Math.round((last.rssBytes / (1024 * 1024)) * 10) / 10,
      processCount: last.ticksByPid.size,
      wakeUps,
      preemptions,
    });
  }
  return usages;
}

/**
 * Busy ticks of the whole machine (all cores) from the first line of /proc/stat: everything but idle and
 * iowait. Over a window it shows how much of the cores the measured processes account for, and so
 * whether something else (another engineer's run) shared the machine.
 */
export function parseMachineBusyTicks(procStat: string): number | undefined {
  const line = procStat.split("\n", 1)[0] ?? "";
  if (!line.startsWith("cpu ")) return undefined;
  const fields = line.trim().split(/\s+/).slice(1).map(Number);
  if (fields.length < 5 || !fields.every((value) => Number.isSafeInteger(value))) return undefined;
  // user nice system idle iowait irq softirq steal [guest guest_nice, already inside user and nice]
  const [user = 0, nice = 0, system = 0, , , irq = 0, softirq = 0, steal = 0] = fields;
  return user + nice + system + irq + softirq + steal;
}

export function readMachineBusyTicks(): number | undefined {
  try {
    return parseMachineBusyTicks(readFileSync("/proc/stat", "utf8"));
  } catch {
    return undefined;
  }
}

/** The machine's busy CPU (all cores) between two readMachineBusyTicks, in ms; null where either could not be read. */
export function machineCpuMsBetween(startTicks: number | undefined, endTicks: number | undefined, ticksPerSecond: number): number | null {
  return startTicks === undefined || endTicks === undefined ? null : ((endTicks - startTicks) * 1000) / ticksPerSecond;
}
