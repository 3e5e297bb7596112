// The connections benchmark's markdown report: where it ran (machine, versions, commit), the exact command,
// and a table per measurement (idle memory, connects/s, edge kill), each row with the machine's load
// average. Pure; the machine and commit come from the chat bench's describeMachine and describeCommit.
import type { CommitDescription, MachineDescription } from "../chat/report.ts";
import type { LatencySummaryMs } from "../chat/latency-histogram.ts";
import type { ConnectionsOptions } from "./connections-options.ts";
import {
  warmUpSettledShare,
  type ConnectsLine,
  type KillLine,
  type LoadAverage,
  type MemoryLine,
  type ProcessCpu,
  type SpreadBucket,
  type WarmUpRound,
} from "./connections-results.ts";

export type ConnectionsReportInput = {
  readonly date: Date;
  readonly machine: MachineDescription;
  readonly commit: CommitDescription;
  readonly command: string;
  readonly options: ConnectionsOptions;
  readonly memory: readonly MemoryLine[];
  readonly connects: readonly ConnectsLine[];
  /** The connects measurement's untimed rounds before its timed passes, in order. */
  readonly warmUp: readonly WarmUpRound[];
  readonly kill: readonly KillLine[];
  /** What went wrong on the side during the run (a server that exited unasked). */
  readonly incidents: readonly string[];
};

function figure(value: number): string {
  return value.toLocaleString("en-US", { maximumFractionDigits: 1 });
}

function bytes(value: number | null): string {
  return value === null ? "–" : figure(value);
}

function mebibytes(value: number): string {
  return figure(Math.round((value / (1024 * 1024)) * 10) / 10);
}

function load(average: LoadAverage): string {
  return average.map((value) => value.toFixed(2)).join(" ");
}

function latency(summary: LatencySummaryMs | null): string {
  if (summary === null) return "–";
  const ms = (value: number): string => (value >= 100 ? value.toFixed(0) : value.toFixed(1));
  return `${ms(summary.p50)} / ${ms(summary.p99)} / ${ms(summary.max)}`;
}

function shortName(name: string): string {
  return name.replace(/^cellwire-/, "").replace(/-server$/, "");
}

/** The processes that did work, busiest first: "edge-1 412, directory 120, …" (µs per operation). */
function cpuColumn(processes: readonly ProcessCpu[]): string {
  return [...processes]
    .filter((process) => process.cpuMs > 0)
    .sort((left, right) => right.cpuMs - left.cpuMs)
    .map((process) => `${shortName(process.name)} ${process.cpuUsPerOperation === null ? "–" : figure(process.cpuUsPerOperation)}`)
    .join(", ");
}

const memoryKindTitles: Readonly<Record<MemoryLine["kind"], string>> = {
  sessions: "authenticated, synced, idle",
  elsewhere: "the same sessions, seen from the other edge (presence claims)",
  silent: "silent (no hello): uWS + Session baseline",
};

function memorySection(lines: readonly MemoryLine[]): string[] {
  if (lines.length === 0) return [];
  const rows = lines.map((line) =>
    [
      memoryKindTitles[line.kind],
      line.edge,
      `${figure(line.socketsOpen)} of ${figure(line.socketsAsked)}`,
      `${mebibytes(line.rssBeforeBytes)} → ${mebibytes(line.rssAfterBytes)} → ${mebibytes(line.rssSettledBytes)}`,
      figure(line.rssBytesPerSocket),
      figure(line.rssSettledBytesPerSocket),
      bytes(line.heapUsedBytesPerSocket),
      bytes(line.externalBytesPerSocket),
      load(line.loadAverage),
    ].join(" | "),
  );
  return [
    "## Idle memory per socket at the edge",
    "",
    "RSS from /proc before (after a full GC), right after the last socket was in, and after a full GC and a pause; the V8 heap in use " +
      "and external memory from the edge's inspector, after the GC (before and after), both per open socket. The silent sockets go to edge 2 first, " +
      "while it is fresh; the sessions to edge 1, and edge 2's growth meanwhile is what they cost another edge (presence claims; its RSS " +
      "reuses pages the silent sockets freed, so read its heap figure).",
    "",
    "| sockets | edge | open | RSS MiB before → after → settled | RSS B/socket | settled RSS B/socket | V8 heap B/socket | external B/socket | load average |",
    "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ...rows.map((row) => `| ${row} |`),
    "",
    ...lines
      .filter((line) => line.failed > 0)
      .map((line) => `- ${line.kind}: ${line.failed} sockets failed; the first: ${line.firstError ?? "no reason given"}`),
  ];
}

/** "10,000 users first-time, then returning 4 times (machine CPU µs per connect: 410, 372, 365 and 360)". */
function warmUpSentence(rounds: readonly WarmUpRound[]): string {
  const first = rounds[0];
  if (first === undefined) return "No warm-up.";
  const returning = rounds.filter((round) => round.users === "returning");
  const figures = rounds.map((round) => (round.machineCpuUsPerConnect === null ? "–" : figure(round.machineCpuUsPerConnect)));
  const listed = figures.length < 2 ? figures.join("") : `${figures.slice(0, -1).join(", ")} and ${figures.at(-1) ?? ""}`;
  return (
    `Before the timed passes, untimed: ${figure(first.connects)} other users first-time, then returning ${returning.length} times, ` +
    `until a round's machine CPU per connect was within ${figure(warmUpSettledShare * 100)}% of the round before ` +
    `(machine CPU µs per connect, round by round, the first-time one first: ${listed}).`
  );
}

function connectsSection(lines: readonly ConnectsLine[], warmUp: readonly WarmUpRound[]): string[] {
  if (lines.length === 0) return [];
  const rows = lines.map((line) =>
    [
      line.users,
      line.edge,
      figure(line.connects),
      figure(line.failed),
      figure(line.inFlightMax),
      figure(line.durationS),
      `**${figure(line.admittedPerS)}**`,
      latency(line.welcomeMs),
      latency(line.syncedMs),
      line.serverCpuUsPerConnect === null ? "–" : figure(line.serverCpuUsPerConnect),
      cpuColumn(line.processes),
      load(line.loadAverage),
    ].join(" | "),
  );
  return [
    "## Authenticated connects per second",
    "",
    "Minimal clients (the benchmark's own lean WebSocket client, a protocol 2 hello with a pre-signed token, wait for `synced`), a bounded number in flight per load process; " +
      "sessions stay open until the pass ends. Times from the socket's request; CPU from /proc over the pass, per connect.",
    "",
    warmUpSentence(warmUp),
    "",
    "| users | edge | connects | failed | in flight | s | admitted/s | to welcome p50 / p99 / max ms | to synced p50 / p99 / max ms | server CPU µs/connect | CPU µs/connect by process | load average |",
    "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ...rows.map((row) => `| ${row} |`),
    "",
    ...lines
      .filter((line) => line.failed > 0)
      .map((line) => `- ${line.users}: ${line.failed} connects failed; the first: ${line.firstError ?? "no reason given"}`),
  ];
}

/** Widest bar of a spread table, in characters. */
const spreadBarWidthMax = 40;

/**
 * A histogram as a table, one bucket a row with a bar, up to the last bucket that holds a client: a wave
 * spread over its window shows as a block of even bars, a herd as one long bar.
 */
function spreadTable(title: string, buckets: readonly SpreadBucket[]): string[] {
  const lastUsed = buckets.findLastIndex((bucket) => bucket.clients > 0);
  if (lastUsed < 0) return [];
  const shown = buckets.slice(0, lastUsed + 1);
  const most = Math.max(...shown.map((bucket) => bucket.clients));
  const total = buckets.reduce((sum, bucket) => sum + bucket.clients, 0);
  return [
    title,
    "",
    "| ms after the kill | clients | share | |",
    "| --- | --- | --- | --- |",
    ...shown.map((bucket) => {
      const range = bucket.toMs === null ? `≥ ${figure(bucket.fromMs)}` : `${figure(bucket.fromMs)}–${figure(bucket.toMs)}`;
      const bar = "█".repeat(Math.round((bucket.clients / most) * spreadBarWidthMax));
      return `| ${range} | ${figure(bucket.clients)} | ${figure(Math.round((bucket.clients / total) * 1000) / 10)}% | ${bar} |`;
    }),
    "",
  ];
}

function killSection(lines: readonly KillLine[]): string[] {
  if (lines.length === 0) return [];
  const ms = (value: number | null): string => (value === null ? "–" : figure(Math.round(value)));
  const rows = lines.map((line) =>
    [
      figure(line.clients),
      `${line.killedEdge} → ${line.survivingEdge}`,
      `**${figure(line.resynced)}**`,
      figure(line.notResynced),
      `${ms(line.p50Ms)} / ${ms(line.p90Ms)} / ${ms(line.p99Ms)} / **${ms(line.maxMs)}**`,
      `${figure(line.attempts.one)} / ${figure(line.attempts.two)} / ${figure(line.attempts.more)}`,
      Object.keys(line.firstFailures).length === 0
        ? "none"
        : Object.entries(line.firstFailures)
            .map(([reason, count]) => `${reason}: ${figure(count)}`)
            .join(", "),
      cpuColumn(line.processes),
      load(line.loadAverage),
    ].join(" | "),
  );
  return [
    "## Edge kill: SDK clients synced again on the other edge",
    "",
    "SDK clients (CellwireClient with both edge URLs, the first edge first) all synced on the first edge, which is then sent SIGKILL; " +
      "each client's time from the kill to its next `synced` on the other edge. CPU per process from the kill to the last resync, per client.",
    "",
    `| clients | edge | synced again | not within ${lines[0]?.deadlineS ?? 30} s | p50 / p90 / p99 / max ms | attempts 1 / 2 / more | first failed attempts, by close code | CPU µs/client by process | load average |`,
    "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ...rows.map((row) => `| ${row} |`),
    "",
    ...lines.flatMap((line) => [
      ...spreadTable(
        `How the ${figure(line.clients)} clients' reconnects spread: from the kill to each client's first connection attempt (the SDK's jittered failover delay, plus noticing the loss).`,
        line.reconnectSpread,
      ),
      ...spreadTable(`How the surviving edge took them: from the kill to each client's next \`synced\`.`, line.resyncSpread),
    ]),
  ];
}

export function renderConnectionsReport(input: ConnectionsReportInput): string {
  const { machine, options } = input;
  const date = input.date.toISOString().slice(0, 10);
  const lines = [
    `# Connections benchmark (${date})`,
    "",
    `- Machine: ${machine.cpuModel}, ${machine.cores} cores, ${figure(machine.memoryGiB)} GiB, Linux ${machine.kernel}; Node ${machine.node}`,
    `- Services: ${machine.postgres}; ${machine.nats}; ${machine.redis}`,
    `- Commit: ${input.commit.commit}${input.commit.dirty ? " (dirty: the tree had uncommitted changes)" : ""}`,
    `- Command: \`${input.command}\``,
    `- Topology: as \`npm start\` runs it (directory, cells a and b with two workers each, two edges) on a fresh namespace; ` +
      `${options.loadProcesses} load processes share the cores with it. The machine is shared: each row has the load average when it was taken.`,
    options.tokens === "dev"
      ? "- Tokens: the dev key pair's (ES256), the edges in dev mode, as `npm start` runs them."
      : `- Tokens: ${options.tokens}, signed with a key pair made for the run; the edges in jwks mode, reading its public key from a JWKS file, as a production edge verifies.`,
    ...(options.profileDirectory === undefined
      ? []
      : [
          `- CPU profiles of every Cellwire process and load process: \`${options.profileDirectory}/<process name>/\`. Profiling slows every process: figures of a profiled run are not comparable with others.`,
        ]),
    "",
    ...memorySection(input.memory),
    ...connectsSection(input.connects, input.warmUp),
    ...killSection(input.kill),
  ];
  if (input.incidents.length > 0) lines.push("Incidents during the run:", "", ...input.incidents.map((incident) => `- ${incident}`), "");
  return lines.join("\n");
}
