// The admin API process (`cellwire admin-api`, process cellwire-admin): config from the environment, one
// NATS connection as the admin user, serve until SIGTERM or SIGINT.
import {
  connectNats,
  createLogger,
  createServiceMetrics,
  failStart,
  onShutdown,
  tellLauncher,
  watchNatsConnected,
} from "@cellwire/cluster";
import { NatsOperations } from "../nats-operations.ts";
import { adminApiProcessName, adminApiReadiness, startAdminApi } from "./admin-api-server.ts";
import { loadAdminApiConfig } from "./config.ts";

process.title = adminApiProcessName;
let logger = createLogger({ service: "admin", processName: adminApiProcessName });

try {
  const { config, warnings } = loadAdminApiConfig(process.env);
  logger = createLogger({ service: "admin", processName: adminApiProcessName, level: config.logLevel });
  for (const warning of warnings) logger.warn(warning);
  const serviceMetrics = createServiceMetrics("admin", adminApiProcessName);
  // Given the metrics, connectNats counts the connection's losses and recoveries, as on every process.
  const connection = await connectNats([...config.natsServers], adminApiProcessName, logger, config.natsAccess, serviceMetrics);
  const nats = watchNatsConnected(connection);
  const operations = new NatsOperations(connection, config.namespace);
  const api = await startAdminApi({
    host: config.host,
    port: config.port,
    token: config.token.reveal(),
    ...(config.metricsToken === undefined ? {} : { metricsToken: config.metricsToken.reveal() }),
    serviceMetrics,
    readiness: adminApiReadiness(nats.connected),
    operations,
    logger,
  });
  onShutdown(async () => {
    await api.stop();
    operations.stop();
    await connection.close();
  }, logger);
  logger.info(`ready: the admin API listens on http://${config.host.includes(":") ? `[${config.host}]` : config.host}:${api.port}`, {
    port: api.port,
    namespace: config.namespace,
  });
  tellLauncher({ type: "ready", processName: adminApiProcessName, port: api.port });
} catch (error) {
  failStart(adminApiProcessName, logger, error);
}
