// The directory process: config from the environment, serve until SIGTERM or SIGINT.
import { createLogger, failStart, onShutdown, tellLauncher } from "@cellwire/cluster";
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
  const directory = await startDirectory(config, logger);
  onShutdown(directory.stop, logger);
  tellLauncher({ type: "ready", processName: directoryProcessName, adminPort: directory.adminPort });
} catch (error) {
  failStart(directoryProcessName, logger, error);
}
