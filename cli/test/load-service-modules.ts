// For tracing-off.test.ts, run in a child process: imports the module graph of every service's main (its
// config and its start function), reads the tracing settings from this process's environment as each
// main does and starts tracing with them, then prints the @opentelemetry modules in require.cache (the
// CommonJS side, which the loader hook does not see) as JSON.
import { createRequire } from "node:module";
import { readTracingConfig, startTracing } from "@cellwire/cluster";
import { loadWorkerConfig } from "@cellwire/cells";
import { loadDirectoryConfig } from "@cellwire/directory";
import { loadEdgeConfig } from "@cellwire/edge";

// The configs as the mains read them (a dev edge, which needs no keys; the worker needs its cell and id).
loadEdgeConfig({ ...process.env, EDGE_AUTH_MODE: "dev" });
loadDirectoryConfig(process.env);
const worker = loadWorkerConfig({ ...process.env, WORKER_CELL_ID: "a", WORKER_ID: "a-1" });
const tracing = await startTracing(readTracingConfig(process.env), "cellwire-worker", "cellwire-worker-a-1");
if ((tracing === undefined) !== (worker.config.tracing?.otlpEndpoint === undefined)) throw new Error("the worker's config disagrees");
await tracing?.shutdown();
const cached = Object.keys(createRequire(import.meta.url).cache).filter((path) => path.includes("@opentelemetry"));
process.stdout.write(JSON.stringify({ traced: tracing !== undefined, cached }));
