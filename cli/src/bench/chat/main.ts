// The chat benchmark (issue 9): Cellwire as `npm start` runs it, on a fresh namespace, driven by the SDK
// from separate load processes at a constant arrival rate, rate after rate; then, with --peer socketio,
// the same workload against a two-node Socket.IO peer in the same run. Prints one JSON line per (system,
// rate), one knee line per system and the ratio line on stdout (progress on stderr), writes the markdown
// report, and exits 1 when the history checker finds a fault in Cellwire's run.
//
//   npm run bench:chat -- --group <n> [--rates <list>] [--duration <s>] [--peer socketio] …  (--help for all)
//
// Everything it starts (servers, load processes) is stopped and everything it made on the shared services
// removed at the end, on an error and on Ctrl-C.
import { randomBytes } from "node:crypto";
import { mkdir, writeFile } from "node:fs/promises";
import { dirname, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { servicesToCheck, unreachableServices } from "../../preflight.ts";
import { parseBenchOptions, usage } from "./bench-options.ts";
import { kneeLine, ratioLine, type KneeLine, type RateResult } from "./rate-result.ts";
import { commandLine, describeCommit, describeMachine, renderReport } from "./report.ts";
import { runSystem, type RunContext } from "./system-run.ts";
import { startCellwire, startSocketIo } from "./systems.ts";

const repositoryRoot = fileURLToPath(new URL("../../../../", import.meta.url));
const redisUrl = "redis://127.0.0.1:6379";

function log(line: string): void {
  process.stderr.write(`${line}\n`);
}

function emit(value: unknown): void {
  process.stdout.write(`${JSON.stringify(value)}\n`);
}

/** Cleanups run last-registered first, each once, whichever way the run ends. */
class Cleanups {
  private readonly pending: (() => Promise<void>)[] = [];
  private running: Promise<void> | undefined;

  add(cleanup: () => Promise<void>): void {
    this.pending.push(cleanup);
  }

  runAll(): Promise<void> {
    this.running ??= (async () => {
      for (let cleanup = this.pending.pop(); cleanup !== undefined; cleanup = this.pending.pop()) {
        await cleanup().catch((error: unknown) => log(`cleanup: ${error instanceof Error ? error.message : String(error)}`));
      }
    })();
    return this.running;
  }
}

async function main(argv: readonly string[]): Promise<number> {
  if (argv.includes("--help") || argv.includes("-h")) {
    process.stdout.write(usage);
    return 0;
  }
  const parsed = parseBenchOptions(argv);
  if (!parsed.ok) {
    log(`bench:chat: ${parsed.message}\n\n${usage}`);
    return 2;
  }
  const { options } = parsed;
  const problems = await unreachableServices(servicesToCheck([...options.natsServers], redisUrl, options.postgresAdminUrl));
  if (problems.length > 0) {
    log(`bench:chat: cannot run.\n${problems.map((problem) => `- ${problem}`).join("\n")}`);
    return 1;
  }

  // One id names the namespace, the users and the peer's adapter key: reruns on long-lived services never meet.
  const runId = `chat${Date.now().toString(36)}${randomBytes(2).toString("hex")}`;
  const cleanups = new Cleanups();
  const incidents: string[] = [];
  let interrupted = false;
  const interrupt = (signal: NodeJS.Signals): void => {
    if (interrupted) return;
    interrupted = true;
    log(`bench:chat: ${signal}: stopping every process and removing what the run made…`);
    void cleanups.runAll().then(() => process.exit(130));
  };
  process.on("SIGINT", interrupt);
  process.on("SIGTERM", interrupt);

  const context: RunContext = { options, runId, log, emit, onCleanup: (cleanup) => cleanups.add(cleanup) };
  const date = new Date();
  // Asked now, in parallel with the run; awaited for the report (a failure then fails the run, not earlier).
  const machine = describeMachine();
  machine.catch(() => undefined);
  try {
    log(`bench:chat: run ${runId}: starting Cellwire (directory, cells a and b with two workers each, two edges)…`);
    const cellwire = await startCellwire({
      namespace: runId,
      natsServers: options.natsServers,
      redisUrl,
      postgresAdminUrl: options.postgresAdminUrl,
      profileDirectory: options.profileDirectory === undefined ? undefined : resolve(options.profileDirectory),
      onUnexpectedExit: (message) => {
        incidents.push(message);
        log(`bench:chat: ${message}`);
      },
    });
    cleanups.add(() => cellwire.stop());
    let cellwireResults: RateResult[];
    let historyCheck: string | undefined;
    let historyPassed = false;
    try {
      const outcome = await runSystem(cellwire, context);
      cellwireResults = outcome.results;
      historyCheck = outcome.historyCheck?.summary;
      historyPassed = outcome.historyCheck?.ok === true;
      log(`cellwire: ${historyCheck ?? "history check not run"}`);
      for (const finding of outcome.historyCheck?.findings.slice(0, 10) ?? []) log(`  ${finding.kind}: ${finding.detail}`);
    } catch (error) {
      log(`cellwire: the run failed; the servers' last output:\n${cellwire.recentOutput().slice(-40).join("\n")}`);
      throw error;
    } finally {
      // Stopped before the peer starts, so that nothing of it shares the cores with the peer's run.
      await cellwire.stop();
    }

    let peerResults: RateResult[] | undefined;
    if (options.peer === "socketio") {
      log(`bench:chat: starting the Socket.IO peer (two nodes on the Redis adapter)…`);
      const peer = await startSocketIo({ redisUrl, key: `cellwire-bench-${runId}` });
      cleanups.add(() => peer.stop());
      try {
        peerResults = (await runSystem(peer, context)).results;
      } finally {
        await peer.stop();
      }
    }

    const cellwireKnee = kneeLine("cellwire", options.group, cellwireResults);
    emit(cellwireKnee);
    let peerKnee: KneeLine | undefined;
    if (peerResults !== undefined) {
      peerKnee = kneeLine("socketio", options.group, peerResults);
      emit(peerKnee);
    }
    const ratio = peerKnee === undefined ? undefined : ratioLine(cellwireKnee, peerKnee);
    if (ratio !== undefined) emit(ratio);

    const report = renderReport({
      date,
      machine: await machine,
      commit: await describeCommit(repositoryRoot),
      command: commandLine(argv),
      options,
      cellwire: { results: cellwireResults, knee: cellwireKnee },
      ...(peerResults !== undefined && peerKnee !== undefined ? { peer: { results: peerResults, knee: peerKnee } } : {}),
      ...(ratio === undefined ? {} : { ratio }),
      historyCheck,
      incidents,
    });
    await mkdir(dirname(resolve(options.resultsPath)), { recursive: true });
    await writeFile(options.resultsPath, report);
    log(`bench:chat: report written to ${options.resultsPath}`);
    if (!historyPassed) log("bench:chat: FAILED: the history check found faults in Cellwire's run");
    return historyPassed ? 0 : 1;
  } finally {
    await cleanups.runAll();
  }
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (error: unknown) => {
    log(`bench:chat: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}`);
    process.exit(1);
  },
);
