import { describe, expect, it } from "vitest";
import { parseConnectionsOptions } from "./connections-options.ts";
import { renderConnectionsReport, type ConnectionsReportInput } from "./connections-report.ts";
import type { ConnectsLine, KillLine, MemoryLine } from "./connections-results.ts";

const parsed = parseConnectionsOptions([], new Date(2026, 11, 6, 12));
if (!parsed.ok) throw new Error(parsed.message);
const defaultOptions = parsed.options;
const machine = {
  cpuModel: "Test CPU",
  cores: 2,
  memoryGiB: 24,
  kernel: "6.1",
  node: "v20.19.0",
  postgres: "postgres 15",
  nats: "nats-server 2.10",
  redis: "redis 7",
};
const loadAverage = [1.5, 2, 2.5] as const;

const memory: MemoryLine = {
  measurement: "memory",
  kind: "sessions",
  edge: "1",
  socketsAsked: 5000,
  socketsOpen: 5000,
  failed: 0,
  firstError: null,
  rssBeforeBytes: 100 * 1024 * 1024,
  rssAfterBytes: 150 * 1024 * 1024,
  rssSettledBytes: 140 * 1024 * 1024,
  rssBytesPerSocket: 10_485.8,
  rssSettledBytesPerSocket: 8388.6,
  heapUsedBytesPerSocket: 3000,
  externalBytesPerSocket: 40,
  loadAverage,
};
const connects: ConnectsLine = {
  measurement: "connects",
  users: "first-time",
  edge: "1",
  connects: 10_000,
  failed: 0,
  firstError: null,
  inFlightMax: 200,
  durationS: 16.9,
  admittedPerS: 592,
  welcomeMs: { p50: 150, p99: 420, max: 800 },
  syncedMs: { p50: 200, p99: 500, max: 900 },
  processes: [
    { name: "cellwire-edge-1", cpuMs: 9000, cpuUsPerOperation: 900 },
    { name: "cellwire-edge-2", cpuMs: 0, cpuUsPerOperation: 0 },
    { name: "redis-server", cpuMs: 1000, cpuUsPerOperation: 100 },
  ],
  serverCpuUsPerConnect: 1000,
  machineCpuMs: 30_000,
  loadAverage,
};
const kill: KillLine = {
  measurement: "kill",
  killedEdge: "1",
  survivingEdge: "2",
  clients: 6000,
  resynced: 6000,
  notResynced: 0,
  deadlineS: 30,
  p50Ms: 10_400,
  p90Ms: 12_000,
  p99Ms: 13_000,
  maxMs: 13_700,
  attempts: { one: 5000, two: 900, more: 100 },
  firstFailures: { "no close code": 100, "4102": 900 },
  reconnectSpread: [
    { fromMs: 0, toMs: 25, clients: 3000 },
    { fromMs: 25, toMs: 50, clients: 1500 },
    { fromMs: 50, toMs: 75, clients: 0 },
    { fromMs: 75, toMs: null, clients: 1500 },
  ],
  resyncSpread: [
    { fromMs: 0, toMs: 500, clients: 6000 },
    { fromMs: 500, toMs: null, clients: 0 },
  ],
  processes: [{ name: "cellwire-edge-2", cpuMs: 6000, cpuUsPerOperation: 1000 }],
  machineCpuMs: 20_000,
  loadAverage,
};

/** A report of a run on 2026-12-06 at commit abc1234 (clean), with what `input` names and nothing else measured. */
function reportOf(input: Partial<ConnectionsReportInput>): string {
  return renderConnectionsReport({
    date: new Date(Date.UTC(2026, 11, 6)),
    machine,
    commit: { commit: "abc1234", dirty: false },
    command: "npm run bench:connections --",
    options: defaultOptions,
    memory: [],
    connects: [],
    warmUp: [],
    kill: [],
    incidents: [],
    ...input,
  });
}

describe("the connections report", () => {
  it("names the machine, commit and command, and has a table per measurement with the load average on each row", () => {
    const report = reportOf({
      commit: { commit: "abc1234", dirty: true },
      memory: [memory],
      connects: [connects],
      kill: [kill],
      incidents: ["cellwire-worker-a-1 exited unexpectedly (status 1)"],
    });
    expect(report).toContain("# Connections benchmark (2026-12-06)");
    expect(report).toContain("- Commit: abc1234 (dirty");
    expect(report).toContain(
      "| authenticated, synced, idle | 1 | 5,000 of 5,000 | 100 → 150 → 140 | 10,485.8 | 8,388.6 | 3,000 | 40 | 1.50 2.00 2.50 |",
    );
    expect(report).toContain(
      "| first-time | 1 | 10,000 | 0 | 200 | 16.9 | **592** | 150 / 420 / 800 | 200 / 500 / 900 | 1,000 | edge-1 900, redis 100 | 1.50 2.00 2.50 |",
    );
    expect(report).toContain(
      "| 6,000 | 1 → 2 | **6,000** | 0 | 10,400 / 12,000 / 13,000 / **13,700** | 5,000 / 900 / 100 | 4102: 900, no close code: 100 | edge-2 1,000 | 1.50 2.00 2.50 |",
    );
    expect(report).toContain("- cellwire-worker-a-1 exited unexpectedly (status 1)");
    expect(report).toContain("- Tokens: the dev key pair's (ES256), the edges in dev mode");
    // The wave's spread: a bar per bucket, scaled to the fullest, up to the last bucket with a client.
    expect(report).toContain(`| 0–25 | 3,000 | 50% | ${"█".repeat(40)} |`);
    expect(report).toContain(`| 25–50 | 1,500 | 25% | ${"█".repeat(20)} |`);
    expect(report).toContain("| 50–75 | 0 | 0% |  |");
    expect(report).toContain(`| ≥ 75 | 1,500 | 25% | ${"█".repeat(20)} |`);
    expect(report).toContain(`| 0–500 | 6,000 | 100% | ${"█".repeat(40)} |`);
    expect(report).not.toContain("≥ 500");
  });

  it("leaves out the measurements not run", () => {
    const report = reportOf({ command: "npm run bench:connections -- --measurements kill", kill: [kill] });
    expect(report).not.toContain("Idle memory");
    expect(report).not.toContain("connects per second");
    expect(report).toContain("## Edge kill");
  });

  it("says which tokens the edges verified: a run's own RS256 issuer in jwks mode", () => {
    const withRs256 = parseConnectionsOptions(["--tokens", "RS256"], new Date(2026, 11, 6, 12));
    if (!withRs256.ok) throw new Error(withRs256.message);
    const report = reportOf({ command: "npm run bench:connections -- --tokens RS256", options: withRs256.options, connects: [connects] });
    expect(report).toContain("- Tokens: RS256, signed with a key pair made for the run; the edges in jwks mode");
    expect(report).not.toContain("dev key pair");
  });

  it("says how the connects were warmed up, round by round", () => {
    const report = reportOf({
      connects: [connects],
      warmUp: [
        { users: "first-time", connects: 10_000, machineCpuUsPerConnect: 330 },
        { users: "returning", connects: 10_000, machineCpuUsPerConnect: 1_410 },
        { users: "returning", connects: 10_000, machineCpuUsPerConnect: 372 },
        { users: "returning", connects: 10_000, machineCpuUsPerConnect: null },
      ],
    });
    expect(report).toContain(
      "Before the timed passes, untimed: 10,000 other users first-time, then returning 3 times, until a round's machine CPU per connect " +
        "was within 5% of the round before (machine CPU µs per connect, round by round, the first-time one first: 330, 1,410, 372 and –).",
    );
  });
});
