// The worker process: reads process.env (the only file here that does), starts the worker, tells the
// launcher it is ready and stops cleanly on SIGTERM or SIGINT.
import { createLogger, failStart, onShutdown, startTracing, tellLauncher } from "@cellwire/cluster";
import { loadWorkerConfig } from "./config.ts";
import { startWorker } from "./worker.ts";

// Named before the config is read, so a bad config is still reported under a recognisable name.
let processName = `cellwire-worker-${process.env["WORKER_ID"] ?? "unknown"}`;
let logger = createLogger({ service: "worker", processName });

try {
  const { config, unknownVariables } = loadWorkerConfig(process.env);
  processName = `cellwire-worker-${config.workerId}`;
  process.title = processName;
  logger = createLogger({ service: "worker", processName, ...(config.logLevel === undefined ? {} : { level: config.logLevel }) });
  if (unknownVariables.length > 0) logger.warn(`unknown variables ignored: ${unknownVariables.join(", ")}`);
  // Before the worker starts: OpenTelemetry is loaded only when an endpoint is set (docs/decisions/0034).
  const tracing = await startTracing(config.tracing, "cellwire-worker", processName);
  const worker = await startWorker(config, logger);
  onShutdown(async () => {
    await worker.stop();
    await tracing?.shutdown();
  }, logger);
  tellLauncher({ type: "ready", processName, adminPort: worker.adminPort });
} catch (error) {
  failStart(processName, logger, error);
}
