import { createLogger, failStart, onShutdown, startTracing, tellLauncher } from "@cellwire/cluster";
import { loadEdgeConfig } from "./config.ts";
import { startEdge } from "./edge.ts";

const processName = `cellwire-edge-${process.env["EDGE_ID"] ?? "1"}`;
process.title = processName;
// At info until the config names the level, so a bad config is still reported.
let logger = createLogger({ service: "edge", processName });
try {
  const { config, unknownVariables, warnings } = loadEdgeConfig(process.env);
  logger = createLogger({ service: "edge", processName, level: config.logLevel });
  if (unknownVariables.length > 0) logger.warn(`unknown settings ignored: ${unknownVariables.join(", ")}`);
  for (const warning of warnings) logger.warn(warning);
  // Before the edge starts: OpenTelemetry is loaded only when an endpoint is set (docs/decisions/0034).
  const tracing = await startTracing(config.tracing, "cellwire-edge", processName);
  const edge = await startEdge(config, logger);
  // The process exits once drained; past the drain window, its grace and 5 s for NATS, it is forced to.
  onShutdown(
    async () => {
      await edge.stop();
      await tracing?.shutdown();
    },
    logger,
    config.drainMs + config.drainGraceMs + 5000,
  );
  tellLauncher({ type: "ready", processName, port: edge.port });
} catch (error) {
  failStart(processName, logger, error);
}
