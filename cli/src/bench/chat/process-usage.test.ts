import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import {
  clockTicksPerSecond,
  findProcessIdsByName,
  machineCpuMsBetween,
  parseContextSwitches,
  parseCpuTicks,
  parseMachineBusyTicks,
  parseRssBytes,
  readContextSwitches,
  readCpuTicks,
  readRssBytes,
  sampleUsage,
  usageBetween,
  type UsageSample,
} from "./process-usage.ts";

describe("reading /proc", () => {
  it("adds utime and stime, whatever the command name holds", () => {
    const stat = "4242 (node (worker) 1) S 1 4242 4242 0 -1 4194560 9000 0 3 0 1234 567 0 0 20 0 11 0 100 0 0";
    expect(parseCpuTicks(stat)).toBe(1234 + 567);
    expect(parseCpuTicks("4242 (x) S 1")).toBeUndefined();
  });

  it("reads VmRSS in bytes, and nothing for a process without it", () => {
    expect(parseRssBytes("Name:\tnode\nVmPeak:\t  900 kB\nVmRSS:\t   51200 kB\nThreads:\t11\n")).toBe(51200 * 1024);
    expect(parseRssBytes("Name:\tkthreadd\nThreads:\t1\n")).toBeUndefined();
  });

  it("reads a thread's voluntary and involuntary context switches, and nothing where they are absent", () => {
    const status = "Name:\tnode\nThreads:\t11\nvoluntary_ctxt_switches:\t1532\nnonvoluntary_ctxt_switches:\t3584\n";
    expect(parseContextSwitches(status)).toEqual({ voluntary: 1532, involuntary: 3584 });
    expect(parseContextSwitches("Name:\tnode\nvoluntary_ctxt_switches:\t1532\n")).toBeUndefined();
  });

  it("sums the context switches of every thread of this process, which grow as it sleeps", async () => {
    const before = readContextSwitches(process.pid);
    const mainOnly = parseContextSwitches(readFileSync(`/proc/${process.pid}/status`, "utf8"));
    if (before === undefined || mainOnly === undefined) throw new Error("no context switches read for this process");
    // Node's helper threads switch too, so the sum over threads holds at least the main thread's.
    expect(before.voluntary).toBeGreaterThanOrEqual(mainOnly.voluntary);
    await new Promise((resolve) => setTimeout(resolve, 5));
    const after = readContextSwitches(process.pid);
    expect(after?.voluntary).toBeGreaterThan(before.voluntary);
    expect(readContextSwitches(2 ** 22 + 1)).toBeUndefined();
  });

  it("counts the machine's busy ticks without idle, iowait or the guest time already in user", () => {
    expect(parseMachineBusyTicks("cpu  100 5 50 1000 20 3 2 1 40 0\ncpu0 50 2 25 500 10 1 1 0 20 0\n")).toBe(100 + 5 + 50 + 3 + 2 + 1);
    expect(parseMachineBusyTicks("intr 1 2 3\n")).toBeUndefined();
  });

  it("turns two readings of the machine's busy ticks into ms, and no reading into null", () => {
    expect(machineCpuMsBetween(1_000, 1_250, 100)).toBe(2_500);
    expect(machineCpuMsBetween(undefined, 1_250, 100)).toBeNull();
    expect(machineCpuMsBetween(1_000, undefined, 100)).toBeNull();
  });

  it("reads this process", () => {
    expect(readCpuTicks(process.pid)).toBeGreaterThanOrEqual(0);
    expect(readRssBytes(process.pid)).toBeGreaterThan(1024 * 1024);
    expect(readCpuTicks(2 ** 22 + 1)).toBeUndefined();
    expect(clockTicksPerSecond()).toBeGreaterThan(0);
  });

  it("finds processes by command name", () => {
    const name = readFileSync(`/proc/${process.pid}/comm`, "utf8").trimEnd();
    expect(findProcessIdsByName(name)).toContain(process.pid);
    expect(findProcessIdsByName("no-such-process-name")).toEqual([]);
  });

  it("samples a group of pids, leaving out those that are gone", async () => {
    const sample = await sampleUsage([{ name: "self", pids: () => [process.pid, 2 ** 22 + 1] }]);
    expect([...(sample.get("self")?.ticksByPid.keys() ?? [])]).toEqual([process.pid]);
    expect([...(sample.get("self")?.switchesByPid.keys() ?? [])]).toEqual([process.pid]);
  });
});

describe("usage between two samples", () => {
  const switches = (voluntary: number, involuntary: number) => ({ voluntary, involuntary });
  const start: UsageSample = new Map([
    ["edge", { ticksByPid: new Map([[10, 100]]), switchesByPid: new Map([[10, switches(1000, 50)]]), rssBytes: 50 * 1024 * 1024 }],
    [
      "postgres",
      {
        ticksByPid: new Map([
          [20, 1000],
          [21, 500],
        ]),
        switchesByPid: new Map([
          [20, switches(300, 10)],
          [21, switches(200, 5)],
        ]),
        rssBytes: 0,
      },
    ],
  ]);
  const end: UsageSample = new Map([
    ["edge", { ticksByPid: new Map([[10, 250]]), switchesByPid: new Map([[10, switches(1600, 80)]]), rssBytes: 60 * 1024 * 1024 }],
    // Backend 21 left, backend 22 came in the interval.
    [
      "postgres",
      {
        ticksByPid: new Map([
          [20, 1100],
          [22, 30],
        ]),
        switchesByPid: new Map([
          [20, switches(340, 12)],
          [22, switches(25, 1)],
        ]),
        rssBytes: 30 * 1024 * 1024,
      },
    ],
  ]);

  it("turns ticks into milliseconds and sums a group's processes, their context switches too", () => {
    expect(usageBetween(start, end, 100)).toEqual([
      { name: "edge", cpuMs: 1500, rssMb: 60, processCount: 1, wakeUps: 600, preemptions: 30 },
      // Backend 22 counts whole, 21's switches after the start are lost with it.
      { name: "postgres", cpuMs: 1300, rssMb: 30, processCount: 2, wakeUps: 40 + 25, preemptions: 2 + 1 },
    ]);
  });
});
