// Reads the CPU profiles a benchmark wrote (`node --cpu-prof`, one .cpuprofile per process) and prints,
// per process, where its samples went: the functions with the most self time, and the time per file
// (package or source file), so docs/performance.md can say where each process spends its CPU. "Busy" is
// the number of non-idle samples times the median sampling interval: CPU time, not wall time.
//
//   npx tsx cli/src/bench/profile-summary.ts <directory with .cpuprofile files, searched recursively> [--top 25]
//     [--window <startUs>-<endUs>]
//
// --window counts only the samples taken within it, in µs of the monotonic clock V8 stamps profiles with
// (process.hrtime's): the chat benchmark logs each measured window so with --profile, so a summary need
// not mix a run's set-up (connects, conversations) into the figures of its steady state.
import { readdirSync, readFileSync, statSync } from "node:fs";
import { join, relative } from "node:path";
import { parseArgs } from "node:util";

type CallFrame = { functionName: string; url: string; lineNumber: number };
type ProfileNode = { id: number; callFrame: CallFrame; hitCount?: number };
type Profile = { nodes: ProfileNode[]; startTime: number; endTime: number; samples?: number[]; timeDeltas?: number[] };

const { values, positionals } = parseArgs({
  allowPositionals: true,
  options: { top: { type: "string", default: "25" }, window: { type: "string" } },
});
const directory = positionals[0];
if (directory === undefined) throw new Error("usage: profile-summary.ts <directory> [--top N] [--window <startUs>-<endUs>]");
const top = Number(values.top);
const window = parseWindow(values.window);

function parseWindow(text: string | undefined): { readonly startUs: number; readonly endUs: number } | undefined {
  if (text === undefined) return undefined;
  const match = /^(\d+)-(\d+)$/.exec(text);
  const startUs = Number(match?.[1]);
  const endUs = Number(match?.[2]);
  if (match === null || !(endUs > startUs))
    throw new Error(`--window takes <startUs>-<endUs> with end after start, not ${JSON.stringify(text)}`);
  return { startUs, endUs };
}

function profilesUnder(path: string): string[] {
  const found: string[] = [];
  for (const name of readdirSync(path)) {
    const full = join(path, name);
    if (statSync(full).isDirectory()) found.push(...profilesUnder(full));
    else if (name.endsWith(".cpuprofile")) found.push(full);
  }
  return found.sort();
}

function isProfile(value: unknown): value is Profile {
  return typeof value === "object" && value !== null && Array.isArray((value as { nodes?: unknown }).nodes);
}

/** Where a frame's code lives, short: a package name, or a path relative to the repository. */
function placeOf(url: string): string {
  if (url === "") return "(native)";
  const modules = url.lastIndexOf("node_modules/");
  if (modules >= 0) {
    const rest = url.slice(modules + "node_modules/".length).split("/");
    return rest[0]?.startsWith("@") === true ? `${rest[0]}/${rest[1] ?? ""}` : (rest[0] ?? url);
  }
  if (url.startsWith("node:")) return url;
  return relative(process.cwd(), url.replace(/^file:\/\//, ""));
}

for (const file of profilesUnder(directory)) {
  const parsed: unknown = JSON.parse(readFileSync(file, "utf8"));
  if (!isProfile(parsed)) continue;
  // Self time per node from the number of samples, each worth the median sampling interval (µs). Not from
  // the samples' time deltas: on these shared cores a process that wakes another (a socket write) is often
  // descheduled, its next sample comes late, and the delta would charge the other process's CPU time to
  // the function that was running (writeBuffer, writev) — 4.5% of an edge's samples read as 22% that way.
  const selfUs = new Map<number, number>();
  const samples = parsed.samples ?? [];
  const deltas = [...(parsed.timeDeltas ?? [])].filter((delta) => delta > 0).sort((left, right) => left - right);
  const intervalUs = deltas[Math.floor(deltas.length / 2)] ?? 1000;
  // Sample i was taken at startTime + the sum of the first i + 1 time deltas.
  let sampledAtUs = parsed.startTime;
  samples.forEach((nodeId, index) => {
    sampledAtUs += parsed.timeDeltas?.[index] ?? 0;
    if (window !== undefined && (sampledAtUs < window.startUs || sampledAtUs >= window.endUs)) return;
    selfUs.set(nodeId, (selfUs.get(nodeId) ?? 0) + intervalUs);
  });
  const byFunction = new Map<string, number>();
  const byPlace = new Map<string, number>();
  let totalUs = 0;
  let idleUs = 0;
  for (const node of parsed.nodes) {
    const us = selfUs.get(node.id) ?? 0;
    if (us === 0) continue;
    const { functionName, url, lineNumber } = node.callFrame;
    if (functionName === "(idle)" || functionName === "(program)" || functionName === "(garbage collector)") {
      if (functionName === "(idle)") idleUs += us;
      else byFunction.set(functionName, (byFunction.get(functionName) ?? 0) + us);
      if (functionName !== "(idle)") totalUs += us;
      continue;
    }
    totalUs += us;
    const key = `${functionName || "(anonymous)"} ${placeOf(url)}:${lineNumber + 1}`;
    byFunction.set(key, (byFunction.get(key) ?? 0) + us);
    const place = placeOf(url);
    byPlace.set(place, (byPlace.get(place) ?? 0) + us);
  }
  const wallMs =
    window === undefined
      ? (parsed.endTime - parsed.startTime) / 1000
      : (Math.min(window.endUs, parsed.endTime) - Math.max(window.startUs, parsed.startTime)) / 1000;
  const percent = (us: number): string => `${((100 * us) / Math.max(1, totalUs)).toFixed(1)}%`;
  process.stdout.write(
    `\n## ${relative(directory, file)}: ${(totalUs / 1000).toFixed(0)} ms busy of ${wallMs.toFixed(0)} ms (idle ${(idleUs / 1000).toFixed(0)} ms)\n`,
  );
  process.stdout.write("self time by file or package:\n");
  for (const [place, us] of [...byPlace].sort((left, right) => right[1] - left[1]).slice(0, 12)) {
    process.stdout.write(`  ${percent(us).padStart(6)}  ${place}\n`);
  }
  process.stdout.write("self time by function:\n");
  for (const [name, us] of [...byFunction].sort((left, right) => right[1] - left[1]).slice(0, top)) {
    process.stdout.write(`  ${percent(us).padStart(6)}  ${name}\n`);
  }
}
