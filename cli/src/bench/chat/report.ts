// The chat benchmark's markdown report: where it ran (machine, versions, commit), the exact command, one
// table per system with a row per rate, the knees, the ratios and the history check. renderReport is pure;
// describeMachine and describeCommit gather what it needs from the machine.
import { execFile } from "node:child_process";
import { readFile, readlink } from "node:fs/promises";
import { cpus, release, totalmem } from "node:os";
import { dirname, join } from "node:path";
import { promisify } from "node:util";
import type { BenchOptions } from "./bench-options.ts";
import type { LatencySummaryMs } from "./latency-histogram.ts";
import { findProcessIdsByName } from "./process-usage.ts";
import { isLoadGenerator, type KneeLine, type RateResult, type RatioLine } from "./rate-result.ts";

const run = promisify(execFile);
const versionDeadlineMs = 5000;

export type MachineDescription = {
  readonly cpuModel: string;
  readonly cores: number;
  readonly memoryGiB: number;
  readonly kernel: string;
  readonly node: string;
  readonly postgres: string;
  readonly nats: string;
  readonly redis: string;
};

export type CommitDescription = { readonly commit: string; readonly dirty: boolean };

export type SystemSection = {
  readonly results: readonly RateResult[];
  readonly knee: KneeLine;
};

export type ReportInput = {
  readonly date: Date;
  readonly machine: MachineDescription;
  readonly commit: CommitDescription;
  readonly command: string;
  readonly options: BenchOptions;
  readonly cellwire: SystemSection;
  readonly peer?: SystemSection;
  readonly ratio?: RatioLine;
  /** The history checker's summary line for the Cellwire run. */
  readonly historyCheck: string | undefined;
  /** What went wrong on the side during the run (a server that exited unasked). */
  readonly incidents: readonly string[];
};

// ---------------------------------------------------------------------------------------------------
// Gathering

/** The first line a program prints for `--version`, or what went wrong. */
async function versionOf(executable: string): Promise<string | undefined> {
  try {
    const { stdout, stderr } = await run(executable, ["--version"], { timeout: versionDeadlineMs });
    const line = `${stdout}${stderr}`.trim().split("\n", 1)[0];
    return line === undefined || line === "" ? undefined : line;
  } catch {
    return undefined;
  }
}

/**
 * The version of a running server as its own binary prints it: the program of that name next to its
 * /proc/<pid>/exe (Debian's redis-server is a link to redis-check-rdb, which answers as the latter when
 * called by its own name), else the one on PATH.
 */
async function serverVersion(processName: string): Promise<string> {
  for (const pid of findProcessIdsByName(processName)) {
    const executable = await readlink(`/proc/${pid}/exe`).catch(() => undefined);
    if (executable === undefined) continue;
    const version = (await versionOf(join(dirname(executable), processName))) ?? (await versionOf(executable));
    if (version !== undefined) return version;
  }
  return (await versionOf(processName)) ?? `unknown (no ${processName} found)`;
}

async function cpuModel(): Promise<string> {
  const cpuinfo = await readFile("/proc/cpuinfo", "utf8").catch(() => "");
  const model = /^model name\s*:\s*(.+)$/m.exec(cpuinfo)?.[1];
  return model?.trim() ?? cpus()[0]?.model ?? "unknown";
}

export async function describeMachine(): Promise<MachineDescription> {
  const [model, postgres, nats, redis] = await Promise.all([
    cpuModel(),
    serverVersion("postgres"),
    serverVersion("nats-server"),
    serverVersion("redis-server"),
  ]);
  return {
    cpuModel: model,
    cores: cpus().length,
    memoryGiB: Math.round((totalmem() / 1024 ** 3) * 10) / 10,
    kernel: release(),
    node: process.version,
    postgres,
    nats,
    redis,
  };
}

export async function describeCommit(directory: string): Promise<CommitDescription> {
  try {
    const { stdout: commit } = await run("git", ["rev-parse", "--short", "HEAD"], { cwd: directory, timeout: versionDeadlineMs });
    const { stdout: status } = await run("git", ["status", "--porcelain"], { cwd: directory, timeout: versionDeadlineMs });
    return { commit: commit.trim(), dirty: status.trim() !== "" };
  } catch {
    return { commit: "unknown (not a git checkout)", dirty: false };
  }
}

/** The command as typed: each argument quoted for a POSIX shell when it needs it. */
export function commandLine(argv: readonly string[], script = "bench:chat"): string {
  const quote = (argument: string): string =>
    /^[A-Za-z0-9_./:=,@%+-]+$/.test(argument) ? argument : `'${argument.replaceAll("'", "'\\''")}'`;
  return [`npm run ${script} --`, ...argv.map(quote)].join(" ");
}

// ---------------------------------------------------------------------------------------------------
// Rendering

const systemTitles = { cellwire: "Cellwire", socketio: "Socket.IO 4 + redis-adapter (2 nodes)" } as const;

function figure(value: number): string {
  return value.toLocaleString("en-US", { maximumFractionDigits: 1 });
}

function latency(summary: LatencySummaryMs | null): string {
  if (summary === null) return "–";
  const ms = (value: number): string => (value >= 100 ? value.toFixed(0) : value.toFixed(1));
  return `${ms(summary.p50)} / ${ms(summary.p99)} / ${ms(summary.max)}`;
}

/** Short process names for the compact column: cellwire-worker-a-1 → worker-a-1. */
function shortName(name: string): string {
  return name
    .replace(/^cellwire-/, "")
    .replace(/^socketio-peer-/, "node-")
    .replace(/-server$/, "");
}

function cpuColumn(result: RateResult): string {
  return result.processes
    .map((process) => `${shortName(process.name)} ${process.cpuUsPerMessage === null ? "–" : figure(process.cpuUsPerMessage)}`)
    .join(", ");
}

/** Context switches per message, to the hundredth a batch's sharing of one needs. */
function switchesFigure(count: number | null): string {
  return count === null ? "–" : count.toFixed(2);
}

function switchesColumn(result: RateResult): string {
  return result.processes
    .map(
      (process) =>
        `${shortName(process.name)} ${switchesFigure(process.wakeUpsPerMessage)} / ${switchesFigure(process.preemptionsPerMessage)}`,
    )
    .join(", ");
}

function rssColumn(result: RateResult): string {
  return result.processes.map((process) => `${shortName(process.name)} ${figure(process.rssMb)}`).join(", ");
}

function machineShare(result: RateResult): string {
  if (result.machineCpuMs === null) return "–";
  const measured = result.processes.reduce((sum, process) => sum + process.cpuMs, 0);
  const cores = (result.machineCpuMs / (result.durationS * 1000)).toFixed(2);
  return `${cores} cores busy, ${result.machineCpuMs === 0 ? 0 : Math.round((measured / result.machineCpuMs) * 100)}% of it measured`;
}

function rateTable(results: readonly RateResult[]): string[] {
  const header =
    "| rate | sent | acked | failed | unanswered | expected | delivered | late | missing | dup | acked/s | deliveries/s | ack p50 / p99 / max ms | delivery p50 / p99 / max ms | pass | server CPU µs/msg |";
  const rows = results.map((result) =>
    [
      figure(result.rate),
      figure(result.sent),
      figure(result.acked),
      figure(result.failed),
      figure(result.unanswered),
      figure(result.expectedDeliveries),
      figure(result.delivered),
      figure(result.late),
      figure(result.missing),
      figure(result.duplicates),
      figure(result.ackedPerS),
      figure(result.deliveriesPerS),
      latency(result.ackMs),
      latency(result.deliveryMs),
      result.pass ? "yes" : "**no**",
      result.serverCpuUsPerMessage === null ? "–" : figure(result.serverCpuUsPerMessage),
    ].join(" | "),
  );
  return [header, `|${" --- |".repeat(16)}`, ...rows.map((row) => `| ${row} |`)];
}

/**
 * How late the load generator issued the sends: the ack and delivery latencies count from each send's
 * intended time, so they include this (its timers fire late on a busy or an idle machine alike).
 */
function issueLatenessTable(results: readonly RateResult[]): string[] {
  const rows = results.map((result) => `| ${figure(result.rate)} | ${latency(result.issueLatenessMs)} |`);
  return [
    "| rate | the load generator's lateness: send issued after its intended time, p50 / p99 / max ms (in both latencies above) |",
    "| --- | --- |",
    ...rows,
  ];
}

function processTable(results: readonly RateResult[]): string[] {
  const rows = results.map(
    (result) => `| ${figure(result.rate)} | ${cpuColumn(result)} | ${rssColumn(result)} | ${machineShare(result)} |`,
  );
  return ["| rate | CPU µs per acked message, by process | RSS MiB, by process | machine |", "| --- | --- | --- | --- |", ...rows];
}

/**
 * Context switches per acked message, every thread counted: a voluntary one is a sleep that a wake-up
 * ends, so the first figure is how many times the message (with its batch) woke each process; the second
 * how often each was preempted, a sign of the cores' contention.
 */
function switchesTable(results: readonly RateResult[]): string[] {
  const rows = results.map(
    (result) => `| ${figure(result.rate)} | ${switchesFigure(result.serverWakeUpsPerMessage)} | ${switchesColumn(result)} |`,
  );
  return [
    "| rate | server wake-ups per acked message | wake-ups / preemptions per acked message, by process (voluntary / involuntary context switches of all its threads) |",
    "| --- | --- | --- |",
    ...rows,
  ];
}

/** What each acked message cost Postgres and NATS, when the run counted it (service-counters.ts). */
function budgetTable(results: readonly RateResult[]): string[] {
  const counted = results.filter((result) => result.budget !== undefined && result.budget !== null);
  if (counted.length === 0) return [];
  const value = (number: number | null): string => (number === null ? "–" : String(number));
  const rows = counted.map((result) => {
    const budget = result.budget;
    if (budget === undefined || budget === null) return "";
    return (
      `| ${figure(result.rate)} | ${value(budget.postgresCommits)} | ${value(budget.postgresStatements)} | ` +
      `${value(budget.postgresRowsInserted)} / ${value(budget.postgresRowsUpdated)} / ${value(budget.postgresRowsDeleted)} | ` +
      `${value(budget.natsMessagesIn)} / ${value(budget.natsMessagesOut)} | ${value(budget.natsBytes)} |`
    );
  });
  return [
    "| rate | Postgres commits per message | statements | rows inserted / updated / deleted | NATS messages in / out | NATS bytes in + out |",
    "| --- | --- | --- | --- | --- | --- |",
    ...rows,
  ];
}

function kneeText(knee: KneeLine): string {
  const at =
    knee.kneeSendsPerS === null
      ? "no knee: the lowest rate run already failed"
      : `knee ${figure(knee.kneeSendsPerS)} sends/s (${figure(knee.kneeDeliveriesPerS ?? 0)} deliveries/s)`;
  const twice =
    knee.atTwiceKnee === null
      ? "no rate failed"
      : `at ${figure(knee.atTwiceKnee.rate)} sends/s (the first failing rate) ${figure(knee.atTwiceKnee.ackedPerS)} acked/s`;
  return `${at}; ${twice}`;
}

function section(title: string, system: SystemSection): string[] {
  const failures = system.results
    .filter((result) => result.firstError !== null)
    .map((result) => `- at ${figure(result.rate)} sends/s, the first failed send: ${result.firstError ?? ""}`);
  const lost = system.results
    .filter((result) => result.connectionsLost > 0 || result.unexpectedDeliveries > 0)
    .map(
      (result) =>
        `- at ${figure(result.rate)} sends/s: ${result.connectionsLost} connections dropped, ${result.unexpectedDeliveries} deliveries beyond a message's members`,
    );
  const budget = budgetTable(system.results);
  return [
    `## ${title}`,
    "",
    `**${kneeText(system.knee)}.**`,
    "",
    ...rateTable(system.results),
    "",
    ...issueLatenessTable(system.results),
    "",
    ...processTable(system.results),
    "",
    ...switchesTable(system.results),
    "",
    ...(budget.length > 0 ? [...budget, ""] : []),
    ...failures,
    ...lost,
    ...(failures.length + lost.length > 0 ? [""] : []),
  ];
}

function workloadText(options: BenchOptions): string {
  const conversations = Math.floor(options.users / options.group);
  const kind = options.group === 2 ? `${conversations} direct (1:1) conversations` : `${conversations} groups of ${options.group}`;
  const left = options.users - conversations * options.group;
  return (
    `${options.users} users${left > 0 ? ` (${left} left out)` : ""} in ${kind}, on ${options.loadProcesses} load processes, users spread over both ` +
    `servers; each sender sends to its own conversation, ${options.bodyBytes}-byte bodies; ${options.warmupS} s of warm-up then ${options.durationS} s ` +
    `measured per rate, at a constant arrival rate with latency counted from each send's intended time.`
  );
}

export function renderReport(input: ReportInput): string {
  const { machine, options } = input;
  const date = input.date.toISOString().slice(0, 10);
  const lines = [
    `# Chat benchmark: ${options.group === 2 ? "1:1" : `groups of ${options.group}`} (${date})`,
    "",
    `- Machine: ${machine.cpuModel}, ${machine.cores} cores, ${figure(machine.memoryGiB)} GiB, Linux ${machine.kernel}; Node ${machine.node}`,
    `- Services: ${machine.postgres}; ${machine.nats}; ${machine.redis}`,
    `- Commit: ${input.commit.commit}${input.commit.dirty ? " (dirty: the tree had uncommitted changes)" : ""}`,
    `- Command: \`${input.command}\``,
    `- Workload: ${workloadText(options)}`,
    "- A rate passes when every message reached every member's connection (the sender's own included) within 5 s and p99 delivery is at most 50 ms. " +
      'CPU is utime + stime from /proc over the measured window, per acked message; "server" counts every process but the load generator ' +
      "(load processes and coordinator), Postgres as the backends of the run's cell databases. The load generator shares the cores with the servers. " +
      "RSS is VmRSS at the window's end; Postgres's is summed over its backends, so shared buffers count once per backend.",
    ...(options.profileDirectory === undefined
      ? []
      : [
          `- CPU profiles of every Cellwire process and load process: \`${options.profileDirectory}/<process name>/\` (the file with \`.0.\` after the pid is the main thread; ` +
            "the other is tsx's module loader thread). Profiling slows every process: figures of a profiled run are not comparable with others.",
        ]),
    "",
    ...section(systemTitles.cellwire, input.cellwire),
    `History check: ${input.historyCheck ?? "not run"}`,
    "",
  ];
  if (input.incidents.length > 0) lines.push("Incidents during the run:", "", ...input.incidents.map((incident) => `- ${incident}`), "");
  if (input.peer !== undefined) lines.push(...section(systemTitles.socketio, input.peer));
  if (input.ratio !== undefined) {
    const value = (ratio: number | null): string => (ratio === null ? "– (a system has no knee)" : `${ratio}×`);
    lines.push(
      "## Cellwire against the peer",
      "",
      `- knee, sends/s: ${value(input.ratio.kneeSends)}`,
      `- knee, deliveries/s: ${value(input.ratio.kneeDeliveries)}`,
      "",
    );
  }
  const loadShare = input.cellwire.results.map((result) =>
    result.processes.filter((process) => isLoadGenerator(process.name)).reduce((sum, process) => sum + process.cpuMs, 0),
  );
  if (loadShare.some((cpuMs) => cpuMs > 0)) {
    const perRate = loadShare.map((cpuMs, index) => `${figure(cpuMs)} ms at ${figure(input.cellwire.results[index]?.rate ?? 0)} sends/s`);
    lines.push(`CPU of the load generator (load processes and coordinator) over Cellwire's windows: ${perRate.join(", ")}.`, "");
  }
  return lines.join("\n");
}
