// The connections benchmark's smoke: the whole bench, as a user runs it, at a tiny size against the
// machine's services. It checks that each measurement's figures are well formed and that every SDK client
// synced again on the other edge after the kill, never how fast: a benchmark is no timed test.
import { spawn, type ChildProcess } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, describe, expect, it, onTestFailed } from "vitest";

const repositoryRoot = fileURLToPath(new URL("../../../../", import.meta.url));
const directory = mkdtempSync(join(tmpdir(), "cellwire-connections-bench-smoke-"));
const resultsPath = join(directory, "report.md");
/** Past this the bench is stopped as a user would (Ctrl-C), so it still cleans up. */
const benchDeadlineMs = 100_000;

type BenchRun = { readonly code: number | null; readonly stdout: string; readonly stderr: string };

let child: ChildProcess | undefined;

function runBench(args: readonly string[]): Promise<BenchRun> {
  return new Promise((resolve, reject) => {
    const started = spawn(process.execPath, ["--import", "tsx", "cli/src/bench/connections/main.ts", ...args], {
      cwd: repositoryRoot,
      stdio: ["ignore", "pipe", "pipe"],
    });
    child = started;
    let stdout = "";
    let stderr = "";
    started.stdout.setEncoding("utf8").on("data", (chunk: string) => (stdout += chunk));
    started.stderr.setEncoding("utf8").on("data", (chunk: string) => (stderr += chunk));
    const timer = setTimeout(() => started.kill("SIGINT"), benchDeadlineMs);
    started.once("error", reject);
    started.once("exit", (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

afterAll(async () => {
  if (child !== undefined && child.exitCode === null && child.signalCode === null) {
    const exited = new Promise((resolve) => child?.once("exit", resolve));
    child.kill("SIGINT");
    await exited;
  }
  rmSync(directory, { recursive: true, force: true });
});

/** What a failed test shows of its run: the exit, stdout, and the end of stderr. */
function printRun(run: BenchRun): void {
  console.log(`exit ${String(run.code)}\nstdout:\n${run.stdout}\nstderr:\n${run.stderr.split("\n").slice(-80).join("\n")}`);
}

function parseLines(stdout: string): Record<string, unknown>[] {
  return stdout
    .split("\n")
    .filter((line) => line.trim() !== "")
    .map((line) => {
      const value: unknown = JSON.parse(line);
      if (typeof value !== "object" || value === null || Array.isArray(value)) throw new Error(`not a JSON object: ${line}`);
      return value as Record<string, unknown>;
    });
}

const positive = expect.any(Number) as unknown;
const latency = expect.objectContaining({
  p50: expect.any(Number) as unknown,
  p99: expect.any(Number) as unknown,
  max: expect.any(Number) as unknown,
}) as unknown;
const loadAverage = [expect.any(Number), expect.any(Number), expect.any(Number)] as unknown;

describe("npm run bench:connections", () => {
  it("measures idle memory, connects/s and an edge kill at a tiny size: figures well formed, every client synced again", async () => {
    const run = await runBench([
      "--sockets",
      "50",
      "--connects",
      "100",
      "--users",
      "200",
      "--load-processes",
      "2",
      "--results",
      resultsPath,
    ]);
    onTestFailed(() => printRun(run));
    expect(run.code).toBe(0);
    const lines = parseLines(run.stdout);

    const memory = lines.filter((line) => line["measurement"] === "memory");
    expect(memory.map((line) => line["kind"])).toEqual(["silent", "sessions", "elsewhere"]);
    for (const line of memory) {
      expect(line).toMatchObject({ socketsAsked: 50, socketsOpen: 50, failed: 0, loadAverage });
      for (const field of ["rssBeforeBytes", "rssAfterBytes", "rssSettledBytes"]) expect(line[field], field).toBeGreaterThan(0);
      // Through the edge's inspector: a heap figure per socket, whatever its sign at this size.
      expect(Number.isFinite(line["heapUsedBytesPerSocket"]), "heapUsedBytesPerSocket").toBe(true);
      expect(Number.isFinite(line["rssBytesPerSocket"]), "rssBytesPerSocket").toBe(true);
    }

    const connects = lines.filter((line) => line["measurement"] === "connects");
    expect(connects.map((line) => line["users"])).toEqual(["first-time", "returning"]);
    for (const line of connects) {
      expect(line).toMatchObject({ connects: 100, failed: 0, admittedPerS: positive, welcomeMs: latency, syncedMs: latency, loadAverage });
      expect(line["admittedPerS"]).toBeGreaterThan(0);
      expect(line["processes"]).toEqual(
        expect.arrayContaining([
          expect.objectContaining({ name: "cellwire-edge-1", cpuMs: positive }),
          expect.objectContaining({ name: "cellwire-directory" }),
          expect.objectContaining({ name: "postgres" }),
          expect.objectContaining({ name: "nats-server" }),
          expect.objectContaining({ name: "load-1" }),
        ]),
      );
    }

    const [kill, ...more] = lines.filter((line) => line["measurement"] === "kill");
    expect(more).toEqual([]);
    expect(kill).toMatchObject({ killedEdge: "1", survivingEdge: "2", clients: 200, resynced: 200, notResynced: 0, loadAverage });
    for (const field of ["p50Ms", "p90Ms", "p99Ms", "maxMs"]) expect(kill?.[field], field).toBeGreaterThan(0);
    expect(Number(kill?.["p50Ms"])).toBeLessThanOrEqual(Number(kill?.["maxMs"]));
    // Every client's first attempt after the kill, and its resync, is in the histograms of the wave.
    const clientsIn = (buckets: unknown): number =>
      Array.isArray(buckets) ? buckets.reduce((sum: number, bucket: { clients?: unknown }) => sum + Number(bucket.clients), 0) : 0;
    expect(clientsIn(kill?.["reconnectSpread"])).toBe(200);
    expect(clientsIn(kill?.["resyncSpread"])).toBe(200);

    expect(existsSync(resultsPath)).toBe(true);
    const report = readFileSync(resultsPath, "utf8");
    expect(report).toContain("## Idle memory per socket at the edge");
    expect(report).toContain("## Authenticated connects per second");
    expect(report).toContain("## Edge kill: SDK clients synced again on the other edge");
    expect(report).toContain("How the 200 clients' reconnects spread");
  });

  it("runs the edges in jwks mode with --tokens RS256: the run's own issuer's tokens connect and resync", async () => {
    const rs256ResultsPath = join(directory, "report-rs256.md");
    const run = await runBench([
      "--measurements",
      "connects,kill",
      "--connects",
      "100",
      "--users",
      "100",
      "--tokens",
      "RS256",
      "--results",
      rs256ResultsPath,
    ]);
    onTestFailed(() => printRun(run));
    expect(run.code).toBe(0);
    expect(run.stderr).toContain("edges in jwks mode, RS256 tokens");
    const lines = parseLines(run.stdout);
    const connects = lines.filter((line) => line["measurement"] === "connects");
    expect(connects.map((line) => line["users"])).toEqual(["first-time", "returning"]);
    for (const line of connects) expect(line).toMatchObject({ connects: 100, failed: 0 });
    const kill = lines.find((line) => line["measurement"] === "kill");
    expect(kill).toMatchObject({ clients: 100, resynced: 100, notResynced: 0 });
    expect(readFileSync(rs256ResultsPath, "utf8")).toContain(
      "- Tokens: RS256, signed with a key pair made for the run; the edges in jwks mode",
    );
  });
});
