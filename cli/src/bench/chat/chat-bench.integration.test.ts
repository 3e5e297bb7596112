// The chat benchmark's smoke: the whole bench, as a user runs it, at a tiny rate against the machine's
// services, both systems. It checks what must hold at any speed (every message reached every member, the
// knee and ratio lines, the report, a passing history check), never how fast: a benchmark is no timed test.
import { spawn, type ChildProcess } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, describe, expect, it, onTestFailed } from "vitest";

const repositoryRoot = fileURLToPath(new URL("../../../../", import.meta.url));
const directory = mkdtempSync(join(tmpdir(), "cellwire-chat-bench-smoke-"));
const resultsPath = join(directory, "report.md");
/** Past this the bench is stopped as a user would (Ctrl-C), so it still cleans up. */
const benchDeadlineMs = 100_000;

type BenchRun = { readonly code: number | null; readonly stdout: string; readonly stderr: string };

let child: ChildProcess | undefined;

function runBench(args: readonly string[]): Promise<BenchRun> {
  return new Promise((resolve, reject) => {
    const started = spawn(process.execPath, ["--import", "tsx", "cli/src/bench/chat/main.ts", ...args], {
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

describe("npm run bench:chat", () => {
  it("runs 1:1 against Cellwire and the Socket.IO peer: every message reaches every member, knees, report, history check", async () => {
    const run = await runBench([
      "--group",
      "2",
      "--users",
      "20",
      "--rates",
      "10",
      "--duration",
      "2",
      "--warmup",
      "1",
      "--peer",
      "socketio",
      "--results",
      resultsPath,
    ]);
    onTestFailed(() =>
      console.log(`exit ${String(run.code)}\nstdout:\n${run.stdout}\nstderr:\n${run.stderr.split("\n").slice(-80).join("\n")}`),
    );
    expect(run.code).toBe(0);
    const lines = parseLines(run.stdout);
    for (const system of ["cellwire", "socketio"]) {
      const rates = lines.filter((line) => line["system"] === system && "rate" in line);
      expect(rates, system).toHaveLength(1);
      const [rate] = rates;
      expect(rate?.["sent"], system).toBeGreaterThan(0);
      expect(rate?.["missing"], system).toBe(0);
      expect(rate?.["delivered"], system).toBe(rate?.["expectedDeliveries"]);
      expect(rate?.["expectedDeliveries"], system).toBe(2 * Number(rate?.["sent"]));
      expect(rate?.["processes"], system).toEqual(
        expect.arrayContaining([expect.objectContaining({ name: "load-1" }), expect.objectContaining({ name: "load-2" })]),
      );
      expect(
        lines.filter((line) => line["system"] === system && "kneeSendsPerS" in line),
        system,
      ).toHaveLength(1);
    }
    expect(lines.filter((line) => line["ratio"] === "cellwire/socketio")).toHaveLength(1);
    expect(run.stderr).toMatch(/cellwire: history check passed: .*run quiescent/);
    expect(existsSync(resultsPath)).toBe(true);
    const report = readFileSync(resultsPath, "utf8");
    expect(report).toContain("## Cellwire");
    expect(report).toContain("## Socket.IO 4 + redis-adapter (2 nodes)");
    expect(report).toContain("History check: history check passed");
  });
});
