// The directory process: config from the environment, serve until SIGTERM or SIGINT.
import { createLogger, failStart, onShutdown, tellLauncher } from "@cellwire/cluster";
import { loadDirectoryConfig } from "./config.ts";
import { directoryProcessName, startDirectory } from "./directory-service.ts";

process.title = directoryProcessName;
const logger = createLogger(directoryProcessName);

try {
  const { config, warnings } = loadDirectoryConfig(process.env);
  for (const warning of warnings) logger.warn(warning);
  const directory = await startDirectory(config, logger);
  onShutdown(directory.stop, logger);
  tellLauncher({ type: "ready", processName: directoryProcessName, adminPort: directory.adminPort });
} catch (error) {
  failStart(directoryProcessName, logger, error);
}
