// OpenTelemetry is not even loaded unless OTEL_EXPORTER_OTLP_ENDPOINT is set (issue 13 item 3,
// docs/decisions/0034). Proved in a child process, as a service's main runs: a module loader hook
// (test/opentelemetry-import-recorder.mjs) records every import that resolves to an @opentelemetry
// module, while the child imports the module graph of every service (edge, cells, directory), reads
// their configs and starts tracing as each main does; the child also lists the @opentelemetry modules
// in require.cache (CommonJS, which the hook does not see on Node 20): only @opentelemetry/api may be
// there, required by prom-client itself. With the endpoint set, the same child must show the SDK loaded:
// the recorder does see it when it is there.
import { execFile } from "node:child_process";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, describe, expect, it } from "vitest";

const cliDirectory = fileURLToPath(new URL("..", import.meta.url));
const scratch = await mkdtemp(join(tmpdir(), "cellwire-tracing-off-"));

afterAll(() => rm(scratch, { recursive: true, force: true }));

type ChildReport = { readonly imports: string[]; readonly traced: boolean; readonly cached: string[] };

async function runChild(label: string, otelEnvironment: Record<string, string>): Promise<ChildReport> {
  const importsFile = join(scratch, `${label}.txt`);
  const environment: Record<string, string> = { OPENTELEMETRY_IMPORTS_FILE: importsFile, ...otelEnvironment };
  // The parent's own OTEL_* settings must not leak in.
  for (const [name, value] of Object.entries(process.env))
    if (!name.startsWith("OTEL_") && value !== undefined && !(name in environment)) environment[name] = value;
  const stdout = await new Promise<string>((resolve, reject) => {
    execFile(
      process.execPath,
      ["--import", "tsx", "--import", "./test/opentelemetry-import-recorder.mjs", "./test/load-service-modules.ts"],
      { cwd: cliDirectory, env: environment, timeout: 60_000 },
      (error, out, err) => (error === null ? resolve(out) : reject(new Error(`${error.message}\n${err}`))),
    );
  });
  const report = JSON.parse(stdout) as { traced: boolean; cached: string[] };
  const recorded = await readFile(importsFile, "utf8").catch(() => "");
  return { imports: recorded.split("\n").filter((line) => line !== ""), traced: report.traced, cached: report.cached };
}

describe("tracing off", () => {
  it("loads no OpenTelemetry SDK module when OTEL_EXPORTER_OTLP_ENDPOINT is not set", async () => {
    const off = await runChild("off", {});
    expect(off.traced).toBe(false);
    expect(off.imports).toEqual([]);
    // The one exception, not ours: prom-client 15 requires @opentelemetry/api (the no-op API, for
    // exemplars) at import. No SDK, exporter, propagator or context manager module is loaded.
    const notApi = off.cached.filter((path) => !path.includes("/node_modules/@opentelemetry/api/"));
    expect(notApi).toEqual([]);
  });

  it("loads the SDK when it is set (so the recorder would see a stray import)", async () => {
    const on = await runChild("on", { OTEL_EXPORTER_OTLP_ENDPOINT: "http://127.0.0.1:9" });
    expect(on.traced).toBe(true);
    expect(on.imports.some((line) => line.startsWith("@opentelemetry/sdk-trace-node "))).toBe(true);
    expect(on.imports.some((line) => line.startsWith("@opentelemetry/exporter-trace-otlp-http "))).toBe(true);
  });
});
