// The directory process: config from the environment, serve until SIGTERM or SIGINT.
import { createLogger, failStart, onShutdown, startTracing, tellLauncher } from "@cellwire/cluster";
import { loadDirectoryConfig } from "./config.ts";
import { directoryProcessName, startDirectory } from "./directory-service.ts";

process.title = directoryProcessName;
// At info until the config names the level, so a bad config is still reported.
let logger = createLogger({ service: "directory", processName: directoryProcessName });

try {
  const { config, warnings } = loadDirectoryConfig(process.env);
  logger = createLogger({
    service: "directory",
    processName: directoryProcessName,
    ...(config.logLevel === undefined ? {} : { level: config.logLevel }),
  });
  for (const warning of warnings) logger.warn(warning);
  // Before the directory starts: OpenTelemetry is loaded only when an endpoint is set (docs/decisions/0034).
  const tracing = await startTracing(config.tracing, "cellwire-directory", directoryProcessName);
  const directory = await startDirectory(config, logger);
  onShutdown(async () => {
    await directory.stop();
    await tracing?.shutdown();
  }, logger);
  tellLauncher({ type: "ready", processName: directoryProcessName, adminPort: directory.adminPort });
} catch (error) {
  failStart(directoryProcessName, logger, error);
}
