// The admin API's typed config, built from an environment record by a pure function. Only main.ts passes
// process.env in; tests and the launcher build the record themselves.
import {
  ConfigError,
  EnvironmentReader,
  logLevelDefault,
  logLevels,
  readNatsAccess,
  Secret,
  type Environment,
  type LogLevel,
  type NatsAccess,
} from "@cellwire/cluster";
import { namespacePattern } from "@cellwire/protocol";

export type AdminApiConfig = {
  /** Where it listens (ADMIN_HOST): loopback unless the operator puts it behind something of theirs. */
  readonly host: string;
  /** ADMIN_PORT; 0 picks a free port, told to the launcher and printed in the ready line. */
  readonly port: number;
  /** ADMIN_TOKEN: the bearer token every request must carry; at least adminTokenLengthMin characters. */
  readonly token: Secret;
  /**
   * ADMIN_METRICS_TOKEN: a second bearer token that opens /metrics and nothing else, for a scraper, which
   * need not hold the admin token's powers; unset, /metrics takes ADMIN_TOKEN only.
   */
  readonly metricsToken: Secret | undefined;
  /** CELLWIRE_NAMESPACE: the deployment it operates on. */
  readonly namespace: string;
  /** CELLWIRE_NATS_SERVERS, comma-separated host:port. */
  readonly natsServers: readonly string[];
  /** The admin NATS user the commands connect as (CELLWIRE_NATS_*, docs/decisions/0015). */
  readonly natsAccess: NatsAccess;
  /** ADMIN_LOG_LEVEL: the least severe level written (docs/decisions/0033); default info. */
  readonly logLevel: LogLevel;
};

export type LoadedAdminApiConfig = {
  readonly config: AdminApiConfig;
  /** Unknown ADMIN_* variables: worth a log line, not a refusal. */
  readonly warnings: readonly string[];
};

export const adminApiConfigDefaults = { host: "127.0.0.1", port: 8090, namespace: "cellwire", natsServers: "127.0.0.1:4222" } as const;
/** A token shorter than this is refused: 32 characters of base64 are 192 bits, beyond guessing online. */
export const adminTokenLengthMin = 32;
const adminTokenLengthMax = 512;
/** Printable ASCII without spaces: what fits a Bearer header as it is. */
const adminTokenPattern = /^[\x21-\x7e]+$/;
const natsServersMax = 32;

/** Builds the config; throws ConfigError naming the first invalid variable (never echoing the token). */
export function loadAdminApiConfig(environment: Environment): LoadedAdminApiConfig {
  const reader = new EnvironmentReader(environment, ["ADMIN_"]);
  const host = reader.string("ADMIN_HOST", adminApiConfigDefaults.host, /^[A-Za-z0-9.:[\]-]{1,253}$/);
  const port = reader.integer("ADMIN_PORT", adminApiConfigDefaults.port, 0, 65_535);
  const token = reader.optionalString("ADMIN_TOKEN");
  // Secure by default: no token, no API (an open admin API on a shared host is a takeover).
  if (token === undefined)
    throw new ConfigError(`ADMIN_TOKEN is required (at least ${adminTokenLengthMin} characters, e.g. openssl rand -base64 32)`);
  requireTokenShape("ADMIN_TOKEN", token);
  const metricsToken = reader.optionalString("ADMIN_METRICS_TOKEN");
  if (metricsToken !== undefined) requireTokenShape("ADMIN_METRICS_TOKEN", metricsToken);
  // The same token in both would make the scraper's copy an admin token after all.
  if (metricsToken === token) throw new ConfigError("ADMIN_METRICS_TOKEN must differ from ADMIN_TOKEN");
  const namespace = reader.string("CELLWIRE_NAMESPACE", adminApiConfigDefaults.namespace, namespacePattern);
  const natsServers = reader
    .string("CELLWIRE_NATS_SERVERS", adminApiConfigDefaults.natsServers)
    .split(",")
    .map((server) => server.trim())
    .filter((server) => server !== "");
  if (natsServers.length === 0 || natsServers.length > natsServersMax)
    throw new ConfigError(`CELLWIRE_NATS_SERVERS must name 1 to ${natsServersMax} servers`);
  const natsAccess = readNatsAccess(reader, "admin");
  const logLevel = reader.oneOf("ADMIN_LOG_LEVEL", logLevelDefault, logLevels);
  const warnings = reader.unknownVariables().map((name) => `unknown variable ${name} (ignored; a typo?)`);
  return {
    config: {
      host,
      port,
      token: new Secret(token),
      metricsToken: metricsToken === undefined ? undefined : new Secret(metricsToken),
      namespace,
      natsServers,
      natsAccess,
      logLevel,
    },
    warnings,
  };
}

/** Refuses a token too short to resist guessing or unfit for a Bearer header, naming the variable, never the value. */
function requireTokenShape(variable: string, token: string): void {
  if (token.length < adminTokenLengthMin || token.length > adminTokenLengthMax || !adminTokenPattern.test(token))
    throw new ConfigError(`${variable} must be ${adminTokenLengthMin} to ${adminTokenLengthMax} printable characters without spaces`);
}
