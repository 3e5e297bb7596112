// The edge's one typed config, built from the environment by a pure function; only main.ts passes
// process.env in.
import { EnvironmentReader, ConfigError, devDirectConversationKey, directConversationKeyLengthMin, type Environment } from "@cellwire/cluster";
import { namespacePattern, typingExpiresInMsMax } from "@cellwire/protocol";
import { defaultDevKeyDirectory } from "./auth/dev-keys.ts";
import { presencePolicies, type PresencePolicy } from "./presence/presence-access.ts";

export type EdgeAuthConfig =
  | { readonly mode: "dev"; readonly devKeyDirectory: string }
  | {
      readonly mode: "jwks";
      readonly jwksUrl: string | undefined;
      readonly jwksFile: string | undefined;
      readonly issuer: string;
      readonly audience: string;
    };

export type EdgeConfig = {
  readonly namespace: string;
  readonly natsServers: string[];
  readonly edgeId: string;
  readonly host: string;
  /** 0 picks a free port (tests); the chosen one is reported to the launcher. */
  readonly port: number;
  readonly auth: EdgeAuthConfig;
  readonly authTimeoutMs: number;
  /** Advertised in welcome: how often a client should ping. */
  readonly heartbeatIntervalMs: number;
  /** A socket silent for this long is closed by uWebSockets.js (which also pings it automatically). */
  readonly idleTimeoutMs: number;
  readonly sessionsMax: number;
  readonly sessionsPerUserMax: number;
  readonly requestsInFlightPerSessionMax: number;
  /** Requests in flight across the edge; past it: `overloaded` with overloadedRetryAfterMs. */
  readonly requestsInFlightMax: number;
  readonly overloadedRetryAfterMs: number;
  readonly sendBufferBytesMax: number;
  readonly heldEventsPerSessionMax: number;
  /** Conversations one session keeps a cursor for (least recently used idle ones out). */
  readonly conversationsPerSessionMax: number;
  /** Reads of conversation logs one session runs at once. */
  readonly conversationReadsPerSessionMax: number;
  /** Reads of conversation logs in flight across the edge (a wave of resumes queues behind it). */
  readonly conversationReadsInFlightMax: number;
  readonly directoryCacheEntriesMax: number;
  readonly directoryCacheTtlMs: number;
  readonly directoryTimeoutMs: number;
  readonly cellRequestTimeoutMs: number;
  readonly cellRequestAttemptsMax: number;
  /** All attempts of one cell request; above the workers' lease, so a failover is waited out. */
  readonly cellRequestDeadlineMs: number;
  /**
   * How long a request waits out a key that is migrating between cells (`moving`) before the client gets
   * cell_unavailable; above a migration's pause, typically well under a second.
   */
  readonly migrationWaitMs: number;
  readonly leaseMs: number;
  /** Dev mode only: the built web page to serve at /. */
  readonly webDirectory: string | undefined;
  /** Sent in each typing indicator: how long receivers show it unless a newer one refreshes it. */
  readonly typingExpiresInMs: number;
  /** One session's typing frames for one conversation are at least this far apart (else rate_limited). */
  readonly typingIntervalMs: number;
  /** Conversations one session may type in within one typingIntervalMs (else rate_limited). */
  readonly typingConversationsPerSessionMax: number;
  /** Conversation member lists cached for typing (least recently used out). */
  readonly memberCacheConversationsMax: number;
  /** How long a cached member list is trusted: a membership change reaches typing within this. */
  readonly memberCacheTtlMs: number;
  /** How often this edge re-claims its online users on the presence subject. */
  readonly presenceHeartbeatIntervalMs: number;
  /**
   * How long each claim of this edge stands without a newer one (at least two heartbeats): the users of
   * an edge that dies read offline elsewhere within this plus presenceTtlMs / 8.
   */
  readonly presenceTtlMs: number;
  /** Claims of other edges this edge holds (about the users online elsewhere); past it they read offline here. */
  readonly presenceRemoteClaimsMax: number;
  /** Whose presence a session may watch: users it shares a conversation with (the default), or anyone. */
  readonly presencePolicy: PresencePolicy;
  /** (watcher, user) answers of the shared_conversation policy kept at most (least recently used out). */
  readonly presenceAccessPairsMax: number;
  /** How long such an answer, and the list of cells asked for it, is trusted. */
  readonly presenceAccessTtlMs: number;
  /**
   * CELLWIRE_DIRECT_CONVERSATION_KEY, the same on every edge and worker: the secret direct conversation
   * ids are derived with, so that outsiders cannot compute two users' id. Required with EDGE_AUTH_MODE=jwks;
   * a dev edge defaults to the public dev key.
   */
  readonly directConversationKey: string;
};

export function loadEdgeConfig(environment: Environment): { config: EdgeConfig; unknownVariables: string[] } {
  const reader = new EnvironmentReader(environment, ["EDGE_"]);
  const mode = reader.oneOf("EDGE_AUTH_MODE", "dev", ["dev", "jwks"]);
  let auth: EdgeAuthConfig;
  if (mode === "dev") {
    auth = { mode, devKeyDirectory: reader.string("EDGE_DEV_KEY_DIR", defaultDevKeyDirectory) };
  } else {
    const jwksUrl = reader.optionalString("EDGE_JWKS_URL");
    const jwksFile = reader.optionalString("EDGE_JWKS_FILE");
    const issuer = reader.optionalString("EDGE_JWT_ISSUER");
    const audience = reader.optionalString("EDGE_JWT_AUDIENCE");
    if ((jwksUrl === undefined) === (jwksFile === undefined)) throw new ConfigError("EDGE_AUTH_MODE=jwks needs exactly one of EDGE_JWKS_URL and EDGE_JWKS_FILE");
    if (issuer === undefined || audience === undefined) throw new ConfigError("EDGE_AUTH_MODE=jwks needs EDGE_JWT_ISSUER and EDGE_JWT_AUDIENCE");
    auth = { mode, jwksUrl, jwksFile, issuer, audience };
  }
  const config: EdgeConfig = {
    namespace: reader.string("CELLWIRE_NAMESPACE", "cellwire", namespacePattern),
    natsServers: reader.string("CELLWIRE_NATS_SERVERS", "127.0.0.1:4222").split(",").map((server) => server.trim()).filter((server) => server !== ""),
    edgeId: reader.string("EDGE_ID", "1", /^[a-z0-9][a-z0-9-]{0,31}$/),
    host: reader.string("EDGE_HOST", "127.0.0.1"),
    port: reader.integer("EDGE_PORT", 8080, 0, 65535),
    auth,
    authTimeoutMs: reader.integer("EDGE_AUTH_TIMEOUT_MS", 5000, 100, 60_000),
    heartbeatIntervalMs: reader.integer("EDGE_HEARTBEAT_INTERVAL_MS", 25_000, 1000, 600_000),
    idleTimeoutMs: reader.integer("EDGE_IDLE_TIMEOUT_MS", 120_000, 8000, 960_000),
    sessionsMax: reader.integer("EDGE_SESSIONS_MAX", 15_000, 1, 1_000_000),
    sessionsPerUserMax: reader.integer("EDGE_SESSIONS_PER_USER_MAX", 16, 1, 1000),
    requestsInFlightPerSessionMax: reader.integer("EDGE_REQUESTS_IN_FLIGHT_PER_SESSION_MAX", 64, 1, 10_000),
    requestsInFlightMax: reader.integer("EDGE_REQUESTS_IN_FLIGHT_MAX", 20_000, 1, 10_000_000),
    overloadedRetryAfterMs: reader.integer("EDGE_OVERLOADED_RETRY_AFTER_MS", 250, 1, 60_000),
    sendBufferBytesMax: reader.integer("EDGE_SEND_BUFFER_BYTES_MAX", 1024 * 1024, 16 * 1024, 256 * 1024 * 1024),
    heldEventsPerSessionMax: reader.integer("EDGE_HELD_EVENTS_PER_SESSION_MAX", 1000, 1, 1_000_000),
    conversationsPerSessionMax: reader.integer("EDGE_CONVERSATIONS_PER_SESSION_MAX", 10_000, 1, 1_000_000),
    conversationReadsPerSessionMax: reader.integer("EDGE_CONVERSATION_READS_PER_SESSION_MAX", 8, 1, 1000),
    conversationReadsInFlightMax: reader.integer("EDGE_CONVERSATION_READS_IN_FLIGHT_MAX", 256, 1, 100_000),
    directoryCacheEntriesMax: reader.integer("EDGE_DIRECTORY_CACHE_ENTRIES_MAX", 100_000, 1, 10_000_000),
    directoryCacheTtlMs: reader.integer("EDGE_DIRECTORY_CACHE_TTL_MS", 60_000, 1, 86_400_000),
    directoryTimeoutMs: reader.integer("EDGE_DIRECTORY_TIMEOUT_MS", 2000, 50, 60_000),
    cellRequestTimeoutMs: reader.integer("EDGE_CELL_REQUEST_TIMEOUT_MS", 3000, 50, 60_000),
    cellRequestAttemptsMax: reader.integer("EDGE_CELL_REQUEST_ATTEMPTS_MAX", 40, 1, 1000),
    cellRequestDeadlineMs: reader.integer("EDGE_CELL_REQUEST_DEADLINE_MS", 8000, 100, 120_000),
    migrationWaitMs: reader.integer("EDGE_MIGRATION_WAIT_MS", 5000, 100, 120_000),
    leaseMs: reader.integer("EDGE_LEASE_MS", 1500, 100, 600_000),
    webDirectory: reader.optionalString("EDGE_WEB_DIR"),
    typingExpiresInMs: reader.integer("EDGE_TYPING_EXPIRES_IN_MS", 5000, 100, typingExpiresInMsMax),
    typingIntervalMs: reader.integer("EDGE_TYPING_INTERVAL_MS", 1000, 0, 60_000),
    typingConversationsPerSessionMax: reader.integer("EDGE_TYPING_CONVERSATIONS_PER_SESSION_MAX", 4, 1, 1000),
    memberCacheConversationsMax: reader.integer("EDGE_MEMBER_CACHE_CONVERSATIONS_MAX", 10_000, 1, 10_000_000),
    memberCacheTtlMs: reader.integer("EDGE_MEMBER_CACHE_TTL_MS", 10_000, 1, 3_600_000),
    presenceHeartbeatIntervalMs: reader.integer("EDGE_PRESENCE_HEARTBEAT_INTERVAL_MS", 5000, 50, 300_000),
    presenceTtlMs: reader.integer("EDGE_PRESENCE_TTL_MS", 15_000, 100, 3_600_000),
    presenceRemoteClaimsMax: reader.integer("EDGE_PRESENCE_REMOTE_CLAIMS_MAX", 1_000_000, 1, 100_000_000),
    presencePolicy: reader.oneOf("EDGE_PRESENCE_POLICY", "shared_conversation", presencePolicies),
    presenceAccessPairsMax: reader.integer("EDGE_PRESENCE_ACCESS_PAIRS_MAX", 100_000, 1, 100_000_000),
    presenceAccessTtlMs: reader.integer("EDGE_PRESENCE_ACCESS_TTL_MS", 60_000, 0, 3_600_000),
    directConversationKey: reader.optionalString("CELLWIRE_DIRECT_CONVERSATION_KEY") ?? (mode === "dev" ? devDirectConversationKey : ""),
  };
  if (config.directConversationKey.length < directConversationKeyLengthMin) {
    throw new ConfigError(`CELLWIRE_DIRECT_CONVERSATION_KEY must be set, with at least ${directConversationKeyLengthMin} characters (EDGE_AUTH_MODE=jwks has no default)`);
  }
  if (mode === "jwks" && config.directConversationKey === devDirectConversationKey) {
    throw new ConfigError("CELLWIRE_DIRECT_CONVERSATION_KEY is the public dev key: EDGE_AUTH_MODE=jwks needs a secret of its own");
  }
  if (config.presenceTtlMs < 2 * config.presenceHeartbeatIntervalMs) {
    throw new ConfigError("EDGE_PRESENCE_TTL_MS must be at least twice EDGE_PRESENCE_HEARTBEAT_INTERVAL_MS, so one late heartbeat does not flap presence");
  }
  if (config.typingExpiresInMs <= config.typingIntervalMs) {
    throw new ConfigError("EDGE_TYPING_EXPIRES_IN_MS must exceed EDGE_TYPING_INTERVAL_MS, so a typist can refresh an indicator before it lapses");
  }
  if (config.natsServers.length === 0) throw new ConfigError("CELLWIRE_NATS_SERVERS must name at least one server");
  if (config.auth.mode === "jwks" && config.webDirectory !== undefined) throw new ConfigError("EDGE_WEB_DIR is a dev-mode feature; unset it with EDGE_AUTH_MODE=jwks");
  return { config, unknownVariables: reader.unknownVariables() };
}
