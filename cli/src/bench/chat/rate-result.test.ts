import { describe, expect, it } from "vitest";
import { createLatencyHistogram, encodeHistogram, recordLatencyUs } from "./latency-histogram.ts";
import type { WindowReport } from "./load-messages.ts";
import { kneeLine, mergeRate, ratioLine, type RateResult } from "./rate-result.ts";

function encoded(valuesUs: readonly number[]): string {
  const histogram = createLatencyHistogram();
  for (const value of valuesUs) recordLatencyUs(histogram, value);
  return encodeHistogram(histogram);
}

/** One process that sent keys 1 and 2 to pairs; its connections received what `delivered` says. */
function report(delivered: { keys: number[]; onTime: number[]; late: number[] }, deliveriesUs: number[]): WindowReport {
  return {
    sent: 2,
    acked: 2,
    failed: 0,
    firstError: null,
    duplicates: 0,
    connectionsLost: 0,
    ackHistogram: encoded([1000, 2000]),
    deliveryHistogram: encoded(deliveriesUs),
    issueLatenessHistogram: encoded([300, 700]),
    sentKeys: Float64Array.from([1, 2]),
    sentMembers: Uint32Array.from([2, 2]),
    deliveredKeys: Float64Array.from(delivered.keys),
    onTime: Uint32Array.from(delivered.onTime),
    late: Uint32Array.from(delivered.late),
  };
}

const usage = [
  { name: "cellwire-edge-1", cpuMs: 30, rssMb: 100, processCount: 1, wakeUps: 9, preemptions: 3 },
  { name: "postgres", cpuMs: 10, rssMb: 300, processCount: 4, wakeUps: 5, preemptions: 0 },
  { name: "load-1", cpuMs: 20, rssMb: 90, processCount: 1, wakeUps: 7, preemptions: 1 },
];

describe("merging a rate", () => {
  it("adds up the processes, and passes when all arrived on time within 50 ms at p99", () => {
    const result = mergeRate({
      system: "cellwire",
      group: 2,
      rate: 1,
      durationS: 2,
      reports: [report({ keys: [1, 2], onTime: [2, 2], late: [0, 0] }, [5000, 6000, 7000, 8000])],
      usage,
      machineCpuMs: 100,
    });
    expect(result).toMatchObject({
      sent: 2,
      acked: 2,
      unanswered: 0,
      expectedDeliveries: 4,
      delivered: 4,
      missing: 0,
      late: 0,
      ackedPerS: 1,
      deliveriesPerS: 2,
      pass: true,
    });
    expect(result.deliveryMs?.max).toBeCloseTo(8, 1);
    // The generator's own lateness, apart from the latencies that include it.
    expect(result.issueLatenessMs?.max).toBeCloseTo(0.7, 1);
    expect(result.processes).toEqual([
      { name: "cellwire-edge-1", cpuMs: 30, cpuUsPerMessage: 15_000, wakeUpsPerMessage: 4.5, preemptionsPerMessage: 1.5, rssMb: 100 },
      { name: "postgres", cpuMs: 10, cpuUsPerMessage: 5000, wakeUpsPerMessage: 2.5, preemptionsPerMessage: 0, rssMb: 300 },
      { name: "load-1", cpuMs: 20, cpuUsPerMessage: 10_000, wakeUpsPerMessage: 3.5, preemptionsPerMessage: 0.5, rssMb: 90 },
    ]);
    // The load generator is not the server's cost, in CPU or in wake-ups.
    expect(result.serverCpuUsPerMessage).toBe(20_000);
    expect(result.serverWakeUpsPerMessage).toBe(7);
  });

  it("fails a rate with a missing delivery, a late one or a slow p99", () => {
    const base = { system: "socketio" as const, group: 2, rate: 1, durationS: 2, usage, machineCpuMs: null };
    const missing = mergeRate({ ...base, reports: [report({ keys: [1, 2], onTime: [2, 1], late: [0, 0] }, [5000, 5000, 5000])] });
    expect(missing).toMatchObject({ missing: 1, pass: false });
    const late = mergeRate({ ...base, reports: [report({ keys: [1, 2], onTime: [2, 1], late: [0, 1] }, [5000, 5000, 5000, 6_000_000])] });
    expect(late).toMatchObject({ missing: 0, late: 1, pass: false });
    const slow = mergeRate({ ...base, reports: [report({ keys: [1, 2], onTime: [2, 2], late: [0, 0] }, [5000, 5000, 5000, 60_000])] });
    expect(slow).toMatchObject({ missing: 0, late: 0, pass: false });
  });

  it("counts the sends neither acked nor failed by the report as unanswered", () => {
    const waiting = { ...report({ keys: [1, 2], onTime: [2, 2], late: [0, 0] }, [5000]), acked: 0, failed: 1 };
    const result = mergeRate({ system: "cellwire", group: 2, rate: 1, durationS: 2, reports: [waiting], usage, machineCpuMs: null });
    expect(result).toMatchObject({ sent: 2, acked: 0, failed: 1, unanswered: 1, serverCpuUsPerMessage: null });
  });
});

describe("knee and ratio lines", () => {
  const result = (rate: number, pass: boolean): RateResult =>
    // findKnee and kneeLine read only these fields.
    ({ rate, pass, ackedPerS: rate * 0.9, deliveriesPerS: rate * 2 }) as RateResult;

  it("report the knee, its deliveries and what was acked at the first failing rate", () => {
    const knee = kneeLine("cellwire", 2, [result(25, true), result(50, true), result(100, false)]);
    expect(knee).toEqual({
      system: "cellwire",
      group: 2,
      kneeSendsPerS: 50,
      kneeDeliveriesPerS: 100,
      atTwiceKnee: { rate: 100, ackedPerS: 90 },
    });
    const peer = kneeLine("socketio", 2, [result(25, true), result(50, true), result(100, true)]);
    expect(ratioLine(knee, peer)).toEqual({ ratio: "cellwire/socketio", group: 2, kneeSends: 0.5, kneeDeliveries: 0.5 });
  });

  it("have no knee, and no ratio, when the first rate fails", () => {
    const knee = kneeLine("cellwire", 2, [result(25, false)]);
    expect(knee).toEqual({
      system: "cellwire",
      group: 2,
      kneeSendsPerS: null,
      kneeDeliveriesPerS: null,
      atTwiceKnee: { rate: 25, ackedPerS: 22.5 },
    });
    expect(ratioLine(knee, kneeLine("socketio", 2, [result(25, true)])).kneeSends).toBeNull();
  });
});
