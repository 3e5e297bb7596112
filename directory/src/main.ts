// The directory process: config from the environment, serve until SIGTERM or SIGINT.
import { createLogger, failStart, onShutdown, startTracing, tellLauncher } from "@cellwire/cluster";
import { loadDirectoryConfig } from "./config.ts";
import { directoryProcessName, startDirectory } from "./directory-service.ts";

process.title = directoryProcessName;
const logger = createLogger(directoryProcessName);

try {
  const { config, warnings } = loadDirectoryConfig(process.env);
  for (const warning of warnings) logger.warn(warning);
  // Before the directory starts: OpenTelemetry is loaded only when an endpoint is set (docs/decisions/0034).
  const tracing = await startTracing(config.tracing, "cellwire-directory", directoryProcessName);
  const directory = await startDirectory(config, logger);
  onShutdown(async () => {
    await directory.stop();
    await tracing?.shutdown();
  }, logger);
  tellLauncher({ type: "ready", processName: directoryProcessName });
} catch (error) {
  failStart(directoryProcessName, logger, error);
}
