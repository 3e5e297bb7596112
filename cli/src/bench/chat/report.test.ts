import { describe, expect, it } from "vitest";
import { parseBenchOptions } from "./bench-options.ts";
import type { RateResult } from "./rate-result.ts";
import { commandLine, renderReport, type ReportInput } from "./report.ts";

function result(system: RateResult["system"], rate: number, pass: boolean): RateResult {
  return {
    system,
    group: 2,
    rate,
    durationS: 30,
    sent: rate * 30,
    acked: rate * 30,
    failed: 0,
    unanswered: 0,
    expectedDeliveries: rate * 60,
    delivered: rate * 60,
    late: 0,
    missing: 0,
    duplicates: 0,
    unexpectedDeliveries: 0,
    connectionsLost: 0,
    ackedPerS: rate,
    deliveriesPerS: rate * 2,
    ackMs: { p50: 3.2, p99: 12.5, max: 140 },
    deliveryMs: pass ? { p50: 5, p99: 40, max: 90 } : { p50: 30, p99: 58, max: 300 },
    issueLatenessMs: { p50: 0.6, p99: 1.2, max: 2.5 },
    pass,
    processes: [
      {
        name: system === "cellwire" ? "cellwire-worker-a-1" : "socketio-peer-1",
        cpuMs: 3000,
        cpuUsPerMessage: 4000,
        wakeUpsPerMessage: 1.25,
        preemptionsPerMessage: 0.5,
        rssMb: 101.5,
      },
      { name: "load-1", cpuMs: 900, cpuUsPerMessage: 1200, wakeUpsPerMessage: 3, preemptionsPerMessage: null, rssMb: 95 },
    ],
    serverCpuUsPerMessage: 4000,
    serverWakeUpsPerMessage: 1.25,
    machineCpuMs: 40_000,
    firstError: pass ? null : "CellwireClientError: no reply within 10000 ms",
  };
}

const options = parseBenchOptions(["--group", "2", "--rates", "25,50", "--peer", "socketio"], new Date(2026, 11, 6));
if (!options.ok) throw new Error(options.message);

const input: ReportInput = {
  date: new Date("2026-12-06T10:00:00Z"),
  machine: {
    cpuModel: "AMD EPYC",
    cores: 2,
    memoryGiB: 23.5,
    kernel: "6.18",
    node: "v20.20.2",
    postgres: "postgres (PostgreSQL) 15.20",
    nats: "nats-server: v2.9.10",
    redis: "Redis server v=7.0.15",
  },
  commit: { commit: "abc1234", dirty: true },
  command: commandLine(["--group", "2", "--rates", "25,50", "--peer", "socketio"]),
  options: options.options,
  cellwire: {
    results: [result("cellwire", 25, true), result("cellwire", 50, false)],
    knee: { system: "cellwire", group: 2, kneeSendsPerS: 25, kneeDeliveriesPerS: 50, atTwiceKnee: { rate: 50, ackedPerS: 50 } },
  },
  peer: {
    results: [result("socketio", 25, true), result("socketio", 50, true)],
    knee: { system: "socketio", group: 2, kneeSendsPerS: 50, kneeDeliveriesPerS: 100, atTwiceKnee: null },
  },
  ratio: { ratio: "cellwire/socketio", group: 2, kneeSends: 0.5, kneeDeliveries: 0.5 },
  historyCheck: "history check passed: 3000 send attempts",
  incidents: [],
};

describe("the markdown report", () => {
  const report = renderReport(input);

  it("says where and how it ran", () => {
    expect(report).toContain("# Chat benchmark: 1:1 (2026-12-06)");
    expect(report).toContain("AMD EPYC, 2 cores, 23.5 GiB");
    expect(report).toContain("postgres (PostgreSQL) 15.20; nats-server: v2.9.10; Redis server v=7.0.15");
    expect(report).toContain("Commit: abc1234 (dirty");
    expect(report).toContain("`npm run bench:chat -- --group 2 --rates 25,50 --peer socketio`");
  });

  it("has a table per system with a row per rate, the knees, the ratios and the history check", () => {
    expect(report).toContain("## Cellwire");
    expect(report).toContain("## Socket.IO 4 + redis-adapter (2 nodes)");
    expect(report).toContain(
      "| 50 | 1,500 | 1,500 | 0 | 0 | 3,000 | 3,000 | 0 | 0 | 0 | 50 | 100 | 3.2 / 12.5 / 140 | 30.0 / 58.0 / 300 | **no** | 4,000 |",
    );
    expect(report).toContain("**knee 25 sends/s (50 deliveries/s); at 50 sends/s (the first failing rate) 50 acked/s.**");
    expect(report).toContain("worker-a-1 4,000, load-1 1,200");
    // The generator's lateness, which both latencies include, in a table of its own.
    expect(report).toContain("| 25 | 0.6 / 1.2 / 2.5 |");
    // Wake-ups and preemptions per message, the server's and each process's.
    expect(report).toContain("| 25 | 1.25 | worker-a-1 1.25 / 0.50, load-1 3.00 / – |");
    expect(report).toContain("- knee, sends/s: 0.5×");
    expect(report).toContain("History check: history check passed");
    expect(report).toContain("the first failed send: CellwireClientError: no reply within 10000 ms");
  });

  it("quotes arguments a shell would split", () => {
    expect(commandLine(["--results", "my report.md", "--rates", "25,50"])).toBe(
      "npm run bench:chat -- --results 'my report.md' --rates 25,50",
    );
  });
});
