import { describe, expect, it } from "vitest";
import { createLatencyHistogram, encodeHistogram, recordLatencyUs } from "../chat/latency-histogram.ts";
import {
  connectsLine,
  cpuPerOperation,
  killLine,
  memoryLine,
  spreadHistogram,
  warmUpRound,
  warmUpRoundsMax,
  warmUpSettled,
  type WarmUpRound,
} from "./connections-results.ts";

const loadAverage = [1, 2, 3] as const;

function histogramOf(valuesUs: readonly number[]): string {
  const histogram = createLatencyHistogram();
  for (const value of valuesUs) recordLatencyUs(histogram, value);
  return encodeHistogram(histogram);
}

describe("memoryLine", () => {
  it("divides each growth by the sockets still open: RSS right after and after the GC, heap and external after the GC", () => {
    const heap = (heapUsedBytes: number, externalBytes: number) => ({
      heapUsedBytes,
      heapTotalBytes: 2 * heapUsedBytes,
      externalBytes,
      arrayBuffersBytes: 0,
    });
    const line = memoryLine({
      kind: "sessions",
      edge: "1",
      socketsAsked: 1000,
      socketsOpen: 800,
      failed: 200,
      firstError: "closed 4202",
      before: { rssBytes: 100_000_000, heap: heap(20_000_000, 1_000_000) },
      after: { rssBytes: 108_000_000, heap: heap(40_000_000, 1_000_000) },
      settled: { rssBytes: 104_000_000, heap: heap(22_400_000, 1_080_000) },
      loadAverage,
    });
    expect(line).toMatchObject({
      rssBytesPerSocket: 10_000,
      rssSettledBytesPerSocket: 5000,
      heapUsedBytesPerSocket: 3000,
      externalBytesPerSocket: 100,
      socketsOpen: 800,
    });
  });

  it("has no heap figures without the inspector, and no division by zero when nothing stayed open", () => {
    const line = memoryLine({
      kind: "silent",
      edge: "2",
      socketsAsked: 10,
      socketsOpen: 0,
      failed: 10,
      firstError: "refused",
      before: { rssBytes: 1, heap: undefined },
      after: { rssBytes: 2, heap: undefined },
      settled: { rssBytes: 3, heap: undefined },
      loadAverage,
    });
    expect(line).toMatchObject({ rssBytesPerSocket: 0, heapUsedBytesPerSocket: null, externalBytesPerSocket: null });
  });
});

describe("connectsLine", () => {
  it("merges the load processes: connects over the span from the first request to the last synced, latencies, CPU per connect", () => {
    const line = connectsLine({
      users: "first-time",
      edge: "1",
      inFlightMax: 100,
      replies: [
        {
          opened: 300,
          failed: 0,
          firstError: null,
          startedAtUs: 1_000_000,
          finishedAtUs: 1_400_000,
          welcomeHistogram: histogramOf([1000, 2000]),
          syncedHistogram: histogramOf([3000]),
        },
        {
          opened: 200,
          failed: 2,
          firstError: "closed 4003",
          startedAtUs: 1_100_000,
          finishedAtUs: 1_500_000,
          welcomeHistogram: histogramOf([4000]),
          syncedHistogram: histogramOf([9000]),
        },
      ],
      usage: [
        { name: "cellwire-edge-1", cpuMs: 250, rssMb: 1, processCount: 1, wakeUps: 0, preemptions: 0 },
        { name: "load-1", cpuMs: 100, rssMb: 1, processCount: 1, wakeUps: 0, preemptions: 0 },
      ],
      machineCpuMs: 400,
      loadAverage,
    });
    expect(line).toMatchObject({
      connects: 500,
      failed: 2,
      firstError: "closed 4003",
      durationS: 0.5,
      admittedPerS: 1000,
      serverCpuUsPerConnect: 500,
    });
    expect(line.welcomeMs?.max).toBeCloseTo(4, 1);
    expect(line.syncedMs?.p50).toBeCloseTo(3, 1);
    expect(line.processes).toEqual([
      { name: "cellwire-edge-1", cpuMs: 250, cpuUsPerOperation: 500 },
      { name: "load-1", cpuMs: 100, cpuUsPerOperation: 200 },
    ]);
  });
});

describe("killLine", () => {
  it("counts the clients synced again and those that were not, with percentiles over those synced and attempts per client", () => {
    const delays = Float64Array.from([100, 200, 300, 400, Number.NaN]);
    const line = killLine({
      killedEdge: "1",
      survivingEdge: "2",
      deadlineS: 30,
      reports: [
        {
          delaysMs: delays,
          reconnectDelaysMs: Float64Array.from([3, 30, 60, 240, Number.NaN]),
          attempts: Uint32Array.from([1, 1, 2, 3, 9]),
          firstFailures: Uint32Array.from([0, 0, 4102, 1, 1]),
        },
        {
          delaysMs: Float64Array.from([500]),
          reconnectDelaysMs: Float64Array.from([12]),
          attempts: Uint32Array.from([0]),
          firstFailures: Uint32Array.from([0]),
        },
      ],
      usage: [],
      machineCpuMs: null,
      loadAverage,
    });
    expect(line).toMatchObject({
      clients: 6,
      resynced: 5,
      notResynced: 1,
      p50Ms: 300,
      p90Ms: 500,
      maxMs: 500,
      attempts: { one: 3, two: 1, more: 2 },
      firstFailures: { "4102": 1, "no close code": 2 },
    });
    // The first attempts after the kill per 25 ms, and the resyncs per 500 ms, across the load processes.
    expect(line.reconnectSpread.slice(0, 3)).toEqual([
      { fromMs: 0, toMs: 25, clients: 2 },
      { fromMs: 25, toMs: 50, clients: 1 },
      { fromMs: 50, toMs: 75, clients: 1 },
    ]);
    expect(line.reconnectSpread[9]).toEqual({ fromMs: 225, toMs: 250, clients: 1 });
    expect(line.reconnectSpread.reduce((sum, bucket) => sum + bucket.clients, 0)).toBe(5);
    expect(line.resyncSpread.slice(0, 2)).toEqual([
      { fromMs: 0, toMs: 500, clients: 4 },
      { fromMs: 500, toMs: 1000, clients: 1 },
    ]);
  });
});

describe("spreadHistogram", () => {
  it("counts the finite times per bucket from 0, the last bucket open-ended", () => {
    expect(spreadHistogram([0, 24.9, 25, 70, 1e9, Number.NaN, -1], 25, 3)).toEqual([
      { fromMs: 0, toMs: 25, clients: 3 },
      { fromMs: 25, toMs: 50, clients: 1 },
      { fromMs: 50, toMs: null, clients: 2 },
    ]);
  });
});

describe("cpuPerOperation", () => {
  it("is null per operation when there was none", () => {
    expect(cpuPerOperation([{ name: "edge", cpuMs: 10, rssMb: 1, processCount: 1, wakeUps: 0, preemptions: 0 }], 0)).toEqual([
      { name: "edge", cpuMs: 10, cpuUsPerOperation: null },
    ]);
  });
});

describe("warmUpSettled", () => {
  const rounds = (...figures: (number | null)[]): WarmUpRound[] =>
    figures.map((machineCpuUsPerConnect) => ({ users: "returning", connects: 10_000, machineCpuUsPerConnect }));

  it("takes two returning rounds at least, however close the first two figures are", () => {
    expect(warmUpSettled(rounds())).toBe(false);
    expect(warmUpSettled(rounds(400))).toBe(false);
    expect(warmUpSettled(rounds(400, 400))).toBe(true);
  });

  it("goes on while a round's CPU per connect moved by more than 5% from the round before", () => {
    expect(warmUpSettled(rounds(440, 410))).toBe(false);
    expect(warmUpSettled(rounds(440, 410, 372))).toBe(false);
    expect(warmUpSettled(rounds(440, 410, 372, 360))).toBe(true);
    // Up or down: a slower round is no sign of a settled process either.
    expect(warmUpSettled(rounds(360, 400))).toBe(false);
  });

  it("stops at the most rounds whatever the figures, and at the least when /proc gave none", () => {
    const falling = Array.from({ length: warmUpRoundsMax }, (_, index) => 800 - index * 100);
    expect(warmUpSettled(rounds(...falling.slice(0, -1)))).toBe(false);
    expect(warmUpSettled(rounds(...falling))).toBe(true);
    expect(warmUpSettled(rounds(null, 400))).toBe(true);
  });
});

describe("warmUpRound", () => {
  it("counts the connects of every load process and the machine's CPU per connect, null when /proc gave none", () => {
    const replies = [{ opened: 600 }, { opened: 400 }];
    expect(warmUpRound({ users: "returning", replies, machineCpuMs: 372 })).toEqual({
      users: "returning",
      connects: 1000,
      machineCpuUsPerConnect: 372,
    });
    expect(warmUpRound({ users: "first-time", replies, machineCpuMs: null }).machineCpuUsPerConnect).toBeNull();
    expect(warmUpRound({ users: "first-time", replies: [], machineCpuMs: 5 })).toEqual({
      users: "first-time",
      connects: 0,
      machineCpuUsPerConnect: null,
    });
  });
});
