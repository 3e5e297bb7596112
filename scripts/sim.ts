// `npm run sim -- --seed N [--steps M]`: one seeded simulation of a cell (sim/), its
// outcome, and on a failure the seed and the end of its trace. `--seeds A..B`: a range, with progress and
// a summary. `--no-fence` / `--no-ownership-recheck` plant a bug, to see the checker catch it. Exits 1 on
// any failure.
import { defaultSteps, runSimulation, type SimulationResult } from "@cellwire/sim";

type Arguments = {
  readonly firstSeed: number;
  readonly lastSeed: number;
  readonly steps: number;
  readonly fenceEnabled: boolean;
  readonly ownershipRecheckEnabled: boolean;
  readonly traceLines: number;
};

const usage = "usage: npm run sim -- (--seed N | --seeds A..B) [--steps M] [--trace LINES] [--no-fence] [--no-ownership-recheck]";
const progressEverySeeds = 25;
const seedMax = 0xffffffff;

function parseArguments(argv: readonly string[]): Arguments {
  let firstSeed: number | undefined;
  let lastSeed: number | undefined;
  let steps = defaultSteps;
  let traceLines = 60;
  let fenceEnabled = true;
  let ownershipRecheckEnabled = true;
  for (let index = 0; index < argv.length; index++) {
    const name = argv[index];
    const value = (): string => {
      const next = argv[++index];
      if (next === undefined) throw new Error(`${name} needs a value`);
      return next;
    };
    if (name === "--seed") {
      firstSeed = lastSeed = integer(value(), "--seed", 0, seedMax);
    } else if (name === "--seeds") {
      const match = /^(\d+)\.\.(\d+)$/.exec(value());
      if (match === null) throw new Error("--seeds takes a range A..B");
      firstSeed = integer(match[1] ?? "", "--seeds", 0, seedMax);
      lastSeed = integer(match[2] ?? "", "--seeds", firstSeed, seedMax);
    } else if (name === "--steps") {
      steps = integer(value(), "--steps", 1, 1_000_000);
    } else if (name === "--trace") {
      traceLines = integer(value(), "--trace", 0, 400);
    } else if (name === "--no-fence") {
      fenceEnabled = false;
    } else if (name === "--no-ownership-recheck") {
      ownershipRecheckEnabled = false;
    } else {
      throw new Error(`unknown argument ${String(name)}`);
    }
  }
  if (firstSeed === undefined || lastSeed === undefined) throw new Error("a --seed or --seeds is required");
  return { firstSeed, lastSeed, steps, fenceEnabled, ownershipRecheckEnabled, traceLines };
}

function integer(text: string, name: string, minimum: number, maximum: number): number {
  const value = Number(text);
  if (!/^\d+$/.test(text) || !Number.isSafeInteger(value) || value < minimum || value > maximum) {
    throw new Error(`${name} takes an integer in ${minimum}..${maximum}, not ${JSON.stringify(text)}`);
  }
  return value;
}

function describe(result: SimulationResult, elapsedMs: number): string {
  const { stats, liveness } = result;
  const faults = Object.entries(stats.faults)
    .map(([kind, count]) => `${kind} ${count}`)
    .join(", ");
  const agreed = !liveness.checked
    ? "not reached"
    : liveness.convergedAfterMs === undefined
      ? "no agreement after healing"
      : `agreed ${liveness.convergedAfterMs} ms after healing (epochs ${liveness.epochs.join(", ")}), ${liveness.keysAcknowledged}/${liveness.keysTotal} keys written`;
  return [
    `${stats.simulatedMs} simulated ms, ${stats.events} events, ${elapsedMs} ms`,
    `  ${stats.commits} commits, ${stats.fenced} fenced, ${stats.acknowledged} acknowledged, ${stats.abandonedWrites} writes given up, ${stats.epochs} epochs`,
    `  faults: ${faults}`,
    `  liveness: ${agreed}`,
  ].join("\n");
}

function failureReasons(result: SimulationResult): string[] {
  const reasons = result.violations.map((violation) => `safety: ${violation.kind} at ${violation.atMs} ms: ${violation.detail}`);
  if (result.liveness.failure !== undefined) reasons.push(`liveness: ${result.liveness.failure}`);
  if (reasons.length === 0 && !result.ok) reasons.push("the run ended before its liveness check");
  return reasons;
}

function reproduceCommand(seed: number, options: Arguments): string {
  const planted = `${options.fenceEnabled ? "" : " --no-fence"}${options.ownershipRecheckEnabled ? "" : " --no-ownership-recheck"}`;
  return `npm run sim -- --seed ${seed} --steps ${options.steps}${planted}`;
}

function main(): number {
  let options: Arguments;
  try {
    options = parseArguments(process.argv.slice(2));
  } catch (error) {
    process.stderr.write(`${error instanceof Error ? error.message : String(error)}\n${usage}\n`);
    return 2;
  }
  const run = (seed: number): { readonly result: SimulationResult; readonly elapsedMs: number } => {
    const startedAtMs = performance.now();
    const result = runSimulation({
      seed,
      steps: options.steps,
      fenceEnabled: options.fenceEnabled,
      ownershipRecheckEnabled: options.ownershipRecheckEnabled,
    });
    return { result, elapsedMs: Math.round(performance.now() - startedAtMs) };
  };

  if (options.firstSeed === options.lastSeed) {
    const { result, elapsedMs } = run(options.firstSeed);
    if (result.ok) {
      process.stdout.write(`seed ${result.seed}: ok, ${describe(result, elapsedMs)}\n`);
      return 0;
    }
    process.stdout.write(`seed ${result.seed}: FAILED, ${describe(result, elapsedMs)}\n`);
    for (const reason of failureReasons(result)) process.stdout.write(`  ${reason}\n`);
    const tail = result.trace.slice(Math.max(0, result.trace.length - options.traceLines));
    process.stdout.write(`trace, last ${tail.length} lines:\n${tail.map((line) => `  ${line}`).join("\n")}\n`);
    process.stdout.write(`reproduce: ${reproduceCommand(result.seed, options)}\n`);
    return 1;
  }

  const startedAtMs = performance.now();
  const failures: { readonly seed: number; readonly reason: string }[] = [];
  let convergedAfterMsMax = 0;
  const totals = { commits: 0, fenced: 0, acknowledged: 0, simulatedMs: 0 };
  const seedCount = options.lastSeed - options.firstSeed + 1;
  for (let seed = options.firstSeed; seed <= options.lastSeed; seed++) {
    const { result } = run(seed);
    totals.commits += result.stats.commits;
    totals.fenced += result.stats.fenced;
    totals.acknowledged += result.stats.acknowledged;
    totals.simulatedMs += result.stats.simulatedMs;
    convergedAfterMsMax = Math.max(convergedAfterMsMax, result.liveness.convergedAfterMs ?? 0);
    if (!result.ok) failures.push({ seed, reason: failureReasons(result)[0] ?? "failed" });
    const done = seed - options.firstSeed + 1;
    if (done % progressEverySeeds === 0 || seed === options.lastSeed) {
      const seconds = ((performance.now() - startedAtMs) / 1000).toFixed(1);
      process.stdout.write(`${done}/${seedCount} seeds, ${failures.length} failed, ${seconds} s\n`);
    }
  }
  const seconds = ((performance.now() - startedAtMs) / 1000).toFixed(1);
  process.stdout.write(
    `\nseeds ${options.firstSeed}..${options.lastSeed}, ${options.steps} steps each: ${seedCount - failures.length} ok, ${failures.length} failed in ${seconds} s ` +
      `(${(totals.simulatedMs / 1000).toFixed(0)} simulated s, ${totals.commits} commits, ${totals.fenced} fenced, ${totals.acknowledged} acknowledged, ` +
      `slowest agreement after healing ${convergedAfterMsMax} ms)\n`,
  );
  for (const failure of failures)
    process.stdout.write(`  seed ${failure.seed}: ${failure.reason}\n    ${reproduceCommand(failure.seed, options)}\n`);
  return failures.length === 0 ? 0 : 1;
}

process.exitCode = main();
