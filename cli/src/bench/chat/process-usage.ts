// CPU and memory of the processes that work for a benchmark run, read from /proc (Linux only): CPU as
// utime + stime from /proc/<pid>/stat in clock ticks, memory as VmRSS from /proc/<pid>/status. A named
// group can hold several pids (the Postgres backends of a run's cell databases), which are summed.
//
// Ticks are 10 ms on this kernel (CLK_TCK 100), so a figure over a window is good to about
// 10 ms × pids; over a 30 s window that is noise for any process that does real work.
import { execFileSync } from "node:child_process";
import { readdirSync, readFileSync } from "node:fs";

/** A group of processes measured together; `pids` is asked at every sample, so it may change. */
export type UsageTarget = { readonly name: string; readonly pids: () => readonly number[] | Promise<readonly number[]> };

/** CPU ticks per pid and the group's summed RSS, at one moment. */
export type GroupSample = { readonly ticksByPid: ReadonlyMap<number, number>; readonly rssBytes: number };
export type UsageSample = ReadonlyMap<string, GroupSample>;

export type ProcessUsage = {
  readonly name: string;
  /** CPU over the interval (user + system), in milliseconds. */
  readonly cpuMs: number;
  /** Resident memory at the end of the interval, in MiB (summed over the group's processes). */
  readonly rssMb: number;
  /** Processes of the group at the end. */
  readonly processCount: number;
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
    let rssBytes = 0;
    for (const pid of pidsByTarget[index] ?? []) {
      const ticks = readCpuTicks(pid);
      if (ticks === undefined) continue;
      ticksByPid.set(pid, ticks);
      rssBytes += readRssBytes(pid) ?? 0;
    }
    sample.set(target.name, { ticksByPid, rssBytes });
  });
  return sample;
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
    for (const [pid, ticksAtEnd] of last.ticksByPid) ticks += Math.max(0, ticksAtEnd - (first?.ticksByPid.get(pid) ?? 0));
    usages.push({
      name,
      cpuMs: (ticks * 1000) / ticksPerSecond,
      rssMb: Math.round((last.rssBytes / (1024 * 1024)) * 10) / 10,
      processCount: last.ticksByPid.size,
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
