// The directory's typed config, built from an environment record by a pure function. Only main.ts passes
// process.env in; tests and the launcher build the record themselves.
import { namespacePattern } from "@cellwire/protocol";
import {
  ConfigError,
  EnvironmentReader,
  logLevelDefault,
  logLevels,
  readNatsAccess,
  tracingField,
  type Environment,
  type LogLevel,
  type NatsAccess,
  type TracingConfig,
} from "@cellwire/cluster";

export type DirectoryConfig = {
  /** Prefixes the NATS subject and every Redis key (CELLWIRE_NAMESPACE). */
  readonly namespace: string;
  /** NATS servers, host:port (CELLWIRE_NATS_SERVERS, comma-separated). */
  readonly natsServers: readonly string[];
  /** The directory's NATS user, password and TLS (CELLWIRE_NATS_*, docs/decisions/0015); absent: anonymous. */
  readonly natsAccess?: NatsAccess;
  /** DIRECTORY_LOG_LEVEL: the least severe level written (docs/decisions/0033); absent: info. */
  readonly logLevel?: LogLevel;
  /** Where the directory's data lives (DIRECTORY_REDIS_URL; `rediss://` for TLS). */
  readonly redisUrl: string;
  /**
   * PEM file of the CA that signed Redis's certificate (DIRECTORY_REDIS_TLS_CA_FILE), for a `rediss://`
   * URL whose server the system's CAs do not vouch for; read once at start.
   */
  readonly redisTlsCaFile?: string;
  /** Requests handled at once; past it a request is answered directory_unavailable at once. */
  readonly requestsInFlightMax: number;
  /** A Redis command that has no reply within this deadline fails with directory_unavailable. */
  readonly redisCommandTimeoutMs: number;
  /**
   * Replicas that must hold a placement or a move before it is answered (DIRECTORY_REDIS_REPLICA_ACKS_MIN,
   * Redis WAIT): a replica promoted after an asynchronous failover then has every entry anyone was told
   * about (docs/decisions/0023). 0, the default, waits for none (a single Redis with its append-only file).
   */
  readonly redisReplicaAcksMin: number;
  /** How long a placement waits for those replicas before it is answered directory_unavailable (retryable). */
  readonly redisReplicaWaitMs: number;
  /**
   * The admin listener (/metrics, /livez, /readyz): DIRECTORY_ADMIN_HOST, loopback by default (for the
   * deployment's own scrapers), and DIRECTORY_ADMIN_PORT, 0 for a free port (printed in the ready line and
   * told to the launcher). Optional so configs built by hand need not name them; absent means the defaults.
   */
  readonly adminHost?: string;
  readonly adminPort?: number;
  /** OTEL_EXPORTER_OTLP_ENDPOINT, OTEL_SERVICE_NAME (docs/decisions/0034); no endpoint: tracing off. Absent: off. */
  readonly tracing?: TracingConfig;
};

export type LoadedDirectoryConfig = {
  readonly config: DirectoryConfig;
  /** Problems worth a log line that do not stop the service (unknown DIRECTORY_* variables). */
  readonly warnings: readonly string[];
};

export const directoryConfigDefaults = {
  namespace: "cellwire",
  natsServers: "127.0.0.1:4222",
  redisUrl: "redis://127.0.0.1:6379",
  requestsInFlightMax: 256,
  redisCommandTimeoutMs: 2_000,
  redisReplicaAcksMin: 0,
  redisReplicaWaitMs: 500,
  adminHost: "127.0.0.1",
  adminPort: 0,
} as const;

/** A host name or an IPv4/IPv6 address to listen on (no scheme, no port). */
const adminHostPattern = /^[A-Za-z0-9.:-]{1,253}$/;

const natsServersMax = 32;
const natsServerPattern = /^(nats:\/\/|tls:\/\/)?[A-Za-z0-9.[\]:_-]+(:[0-9]{1,5})?$/;
const redisUrlPattern = /^rediss?:\/\/\S+$/;

/** Builds the config from environment variables; throws ConfigError naming the first invalid variable. */
export function loadDirectoryConfig(environment: Environment): LoadedDirectoryConfig {
  const reader = new EnvironmentReader(environment, ["DIRECTORY_"]);
  const namespace = reader.string("CELLWIRE_NAMESPACE", directoryConfigDefaults.namespace, namespacePattern);
  const natsServers = parseNatsServers(reader.string("CELLWIRE_NATS_SERVERS", directoryConfigDefaults.natsServers));
  const natsAccess = readNatsAccess(reader, "directory");
  const logLevel = reader.oneOf("DIRECTORY_LOG_LEVEL", logLevelDefault, logLevels);
  const redisUrl = reader.string("DIRECTORY_REDIS_URL", directoryConfigDefaults.redisUrl);
  // Not echoed as given: a URL may carry Redis's password, and this message is logged.
  if (!redisUrlPattern.test(redisUrl))
    throw new ConfigError(`DIRECTORY_REDIS_URL=${JSON.stringify(redactRedisUrl(redisUrl))} must match ${redisUrlPattern.source}`);
  const requestsInFlightMax = reader.integer("DIRECTORY_REQUESTS_IN_FLIGHT_MAX", directoryConfigDefaults.requestsInFlightMax, 1, 100_000);
  const redisCommandTimeoutMs = reader.integer(
    "DIRECTORY_REDIS_COMMAND_TIMEOUT_MS",
    directoryConfigDefaults.redisCommandTimeoutMs,
    50,
    60_000,
  );
  const redisReplicaAcksMin = reader.integer("DIRECTORY_REDIS_REPLICA_ACKS_MIN", directoryConfigDefaults.redisReplicaAcksMin, 0, 16);
  const redisReplicaWaitMs = reader.integer("DIRECTORY_REDIS_REPLICA_WAIT_MS", directoryConfigDefaults.redisReplicaWaitMs, 1, 60_000);
  const redisTlsCaFile = reader.optionalString("DIRECTORY_REDIS_TLS_CA_FILE");
  const adminHost = reader.string("DIRECTORY_ADMIN_HOST", directoryConfigDefaults.adminHost, adminHostPattern);
  const adminPort = reader.integer("DIRECTORY_ADMIN_PORT", directoryConfigDefaults.adminPort, 0, 65_535);
  if (redisTlsCaFile !== undefined && !redisUrl.startsWith("rediss://"))
    throw new ConfigError("DIRECTORY_REDIS_TLS_CA_FILE needs a rediss:// DIRECTORY_REDIS_URL (TLS)");
  const warnings = reader.unknownVariables().map((name) => `unknown variable ${name} (ignored; a typo?)`);
  return {
    config: {
      namespace,
      natsServers,
      natsAccess,
      logLevel,
      redisUrl,
      ...(redisTlsCaFile === undefined ? {} : { redisTlsCaFile }),
      requestsInFlightMax,
      redisCommandTimeoutMs,
      redisReplicaAcksMin,
      redisReplicaWaitMs,
      adminHost,
      adminPort,
      ...tracingField(environment),
    },
    warnings,
  };
}

function parseNatsServers(raw: string): string[] {
  const servers = raw
    .split(",")
    .map((server) => server.trim())
    .filter((server) => server !== "");
  if (servers.length === 0) throw new ConfigError("CELLWIRE_NATS_SERVERS must name at least one server");
  if (servers.length > natsServersMax) throw new ConfigError(`CELLWIRE_NATS_SERVERS must name at most ${natsServersMax} servers`);
  for (const server of servers) {
    if (!natsServerPattern.test(server)) throw new ConfigError(`CELLWIRE_NATS_SERVERS has an invalid server ${JSON.stringify(server)}`);
  }
  return servers;
}

/** The Redis URL without its password, for log lines and error messages. */
export function redactRedisUrl(redisUrl: string): string {
  try {
    const url = new URL(redisUrl);
    if (url.password !== "") url.password = "***";
    return url.toString();
  } catch {
    return "(unparsable Redis URL)";
  }
}
