// The edge's one typed config, built from the environment by a pure function; only main.ts passes
// process.env in.
import {
  EnvironmentReader,
  ConfigError,
  devDirectConversationKey,
  directConversationKeyLengthMin,
  logLevelDefault,
  logLevels,
  readNatsAccess,
  tracingField,
  type Environment,
  type LogLevel,
  type NatsAccess,
  type TracingConfig,
} from "@cellwire/cluster";
import { namespacePattern, typingExpiresInMsMax } from "@cellwire/protocol";
import { defaultDevKeyDirectory } from "./auth/dev-keys.ts";
import { isLoopbackHost, parseAllowedOrigin, parseTrustedProxy } from "./admission.ts";
import { type RateLimitedKind, type RateLimitSettings } from "./rate-limit/request-rate-limits.ts";
import type { TokenRate } from "./rate-limit/token-bucket.ts";
import { presencePolicies, type PresencePolicy } from "./presence/presence-access.ts";

export type EdgeAuthConfig =
  | { readonly mode: "dev"; readonly devKeyDirectory: string }
  | {
      readonly mode: "jwks";
      readonly jwksUrl: string | undefined;
      readonly jwksFile: string | undefined;
      readonly issuer: string;
      readonly audience: string;
      /** A remote JWKS is fetched again for an unknown kid at most once per cooldown (jose's default when absent). */
      readonly jwksCooldownMs?: number;
      /** A remote JWKS is refetched when older than this (jose's default when absent). */
      readonly jwksCacheMaxAgeMs?: number;
    };

/** Who may open a socket, checked at the WebSocket upgrade (admission.ts). */
export type EdgeAdmissionConfig = {
  /**
   * Browser origins allowed to open a socket (`*` for any); a request without an Origin header (an SDK
   * outside a browser) is always allowed, since only browsers send one and anything else can forge it.
   */
  readonly allowedOrigins: readonly string[];
  /** Dev mode without EDGE_ALLOWED_ORIGINS: pages served from loopback (and the edge's own page) may connect. */
  readonly loopbackOriginsAllowed: boolean;
  /** Sockets from one client address on this edge, authenticated or not; past it HTTP 429 at upgrade. */
  readonly connectionsPerAddressMax: number;
  /** Sockets on this edge that have not been welcomed yet; past it HTTP 503 at upgrade. */
  readonly unauthenticatedMax: number;
  /** Peers (addresses or CIDR blocks) whose X-Forwarded-For names the client; nobody else's is read. */
  readonly trustedProxies: readonly string[];
};

/** Loopback hosts, where a JWKS may be served over plain http (a sidecar, a test): no network sees it. */
const loopbackHosts = new Set(["127.0.0.1", "[::1]", "localhost"]);

/** Keys decide who anyone is, so a remote JWKS comes over https; http only from a loopback host. */
export function jwksUrlProblem(jwksUrl: string): string | undefined {
  let url: URL;
  try {
    url = new URL(jwksUrl);
  } catch {
    return "EDGE_JWKS_URL is not a URL";
  }
  if (url.protocol === "https:") return undefined;
  if (url.protocol === "http:" && loopbackHosts.has(url.hostname)) return undefined;
  return "EDGE_JWKS_URL must be https:// (http:// only on a loopback host: 127.0.0.1, [::1], localhost)";
}

export type EdgeConfig = {
  readonly namespace: string;
  readonly natsServers: string[];
  /** The edge's NATS user, password and TLS (CELLWIRE_NATS_*, docs/decisions/0015); absent: anonymous. */
  readonly natsAccess?: NatsAccess;
  readonly edgeId: string;
  /** EDGE_LOG_LEVEL: the least severe level written (docs/decisions/0033). */
  readonly logLevel: LogLevel;
  readonly host: string;
  /** 0 picks a free port (tests); the chosen one is reported to the launcher. */
  readonly port: number;
  readonly auth: EdgeAuthConfig;
  readonly admission: EdgeAdmissionConfig;
  readonly authTimeoutMs: number;
  /** Skew allowed between the token issuer's clock and the edge's, on exp and nbf. */
  readonly clockToleranceMs: number;
  /** Users whose revocation this edge remembers (refusing their older tokens); past it the oldest is forgotten. */
  readonly revocationsMax: number;
  /** How long a revocation refuses the user's tokens issued before it: set it to the longest token lifetime. */
  readonly revocationRetentionMs: number;
  /** Advertised in welcome: how often a client should ping. */
  readonly heartbeatIntervalMs: number;
  /** A socket silent for this long is closed by uWebSockets.js (which also pings it automatically). */
  readonly idleTimeoutMs: number;
  readonly sessionsMax: number;
  readonly sessionsPerUserMax: number;
  readonly requestsInFlightPerSessionMax: number;
  /** Requests in flight across the edge; past it a request is answered `overloaded` at once, with overloadedRetryAfterMs. */
  readonly requestsInFlightMax: number;
  /** The retry-after of the edge's own `overloaded` answers. */
  readonly overloadedRetryAfterMs: number;
  readonly sendBufferBytesMax: number;
  /**
   * Live events a session holds while it reads its backlog (and live messages per conversation while it
   * reads that conversation's log); past it they are read from the mailbox (or the log).
   */
  readonly heldEventsPerSessionMax: number;
  /**
   * Bytes (encoded frame lengths) of the live items one session holds across all the logs it reads; past
   * it further items are read from their log, as past heldEventsPerSessionMax (docs/decisions/0018).
   */
  readonly heldBytesPerSessionMax: number;
  /**
   * Conversations one session keeps a cursor for; past it the least recently used one that is not being
   * read is forgotten (a later message of it is read from the member's join point again in a resumed
   * session, and the device drops what it already holds by seq).
   */
  readonly conversationsPerSessionMax: number;
  /** Reads of conversation logs one session runs at once. */
  readonly conversationReadsPerSessionMax: number;
  /** Reads of conversation logs in flight across the edge (a wave of resumes queues behind it). */
  readonly conversationReadsInFlightMax: number;
  /**
   * After a ring change or a NATS reconnect, the sessions that must read their mailbox (and logs) again
   * each wait a moment of this window, spread evenly, instead of all reading in the same turn (0: at once).
   */
  readonly catchUpSpreadMs: number;
  /** Such catch-ups reading at once across the edge; the others wait their turn (catch-up-pacer.ts). */
  readonly catchUpReadsInFlightMax: number;
  readonly directoryCacheEntriesMax: number;
  readonly directoryCacheTtlMs: number;
  readonly directoryTimeoutMs: number;
  /**
   * The one deadline of each client request, from its arrival at the edge, carried through both routers to
   * the worker (docs/decisions/0020); below the SDK's 10 s requestTimeoutMs.
   */
  readonly requestDeadlineMs: number;
  /** How long a send that failed retryably still comes before its session's later sends to its conversation. */
  readonly sendOrderHoldMs: number;
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
  /**
   * On SIGTERM the edge closes its sessions (going_away) spread over this window, so its clients do not
   * all reconnect to the other edges at once (edge-drain.ts); 0 closes them together.
   */
  readonly drainMs: number;
  /** After the drain window, how long sessions may still take to answer the requests they serve before they are closed regardless. */
  readonly drainGraceMs: number;
  /** Token buckets per session and per user for sends, typing, history and conversation changes, and the fan-out (docs/protocol.md, "Rate limits"). */
  readonly rateLimits: RateLimitSettings;
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
  /** OTEL_EXPORTER_OTLP_ENDPOINT, OTEL_SERVICE_NAME (docs/decisions/0034); no endpoint: tracing off. Absent: off. */
  readonly tracing?: TracingConfig;
};

/**
 * Said when jwks mode (the default) lacks its settings: an edge that verifies nothing must be asked for,
 * never fallen into.
 */
const jwksSettingsHint =
  "EDGE_AUTH_MODE is jwks unless set: give exactly one of EDGE_JWKS_URL and EDGE_JWKS_FILE, and EDGE_JWT_ISSUER and EDGE_JWT_AUDIENCE " +
  "(or set EDGE_AUTH_MODE=dev for local development only: it signs a token for any user)";

/**
 * The rate limits' defaults, per kind: [per session per second, per session burst, per user per second,
 * per user burst]. Sends: the chat benchmark's users send about 13 a second each, a person far fewer; a
 * user's sessions on one edge together get twice a session's. Typing: the typing limiter already lets at
 * most 4 a second through (one a second in 4 conversations). History: scrolling back, a page at a time.
 * Conversation changes: a burst for an app that opens its direct conversations at start.
 */
const rateLimitDefaults: Readonly<Record<RateLimitedKind, readonly [number, number, number, number]>> = {
  send: [20, 40, 40, 80],
  typing: [4, 8, 8, 16],
  history: [10, 50, 20, 100],
  conversationChange: [5, 50, 10, 100],
  // A refresh costs a signature check; a session needs one per token lifetime.
  refresh: [1, 1, 10, 20],
};

/** EDGE_RATE_<KIND>_… names the kind in upper snake case, plural where it counts requests. */
const rateLimitVariableKinds: Readonly<Record<RateLimitedKind, string>> = {
  send: "SENDS",
  typing: "TYPING",
  history: "HISTORY",
  conversationChange: "CONVERSATION_CHANGES",
  refresh: "REFRESHES",
};

/** Recipients of a user's messages a second (a send to a group of 1,000 costs 1,000), and the burst. */
const fanOutPerUserDefault: TokenRate = { perSecond: 2000, burst: 20_000 };

function readRateLimits(reader: EnvironmentReader): RateLimitSettings {
  const rate = (prefix: string, perSecond: number, burst: number): TokenRate => ({
    perSecond: reader.integer(`${prefix}_PER_SECOND`, perSecond, 1, 1_000_000),
    burst: reader.integer(`${prefix}_BURST`, burst, 1, 10_000_000),
  });
  const perKind = (scope: "SESSION" | "USER"): Record<RateLimitedKind, TokenRate> => {
    const of = (kind: RateLimitedKind): TokenRate => {
      const [sessionPerSecond, sessionBurst, userPerSecond, userBurst] = rateLimitDefaults[kind];
      const prefix = `EDGE_RATE_${rateLimitVariableKinds[kind]}_PER_${scope}`;
      return scope === "SESSION" ? rate(prefix, sessionPerSecond, sessionBurst) : rate(prefix, userPerSecond, userBurst);
    };
    return {
      send: of("send"),
      typing: of("typing"),
      history: of("history"),
      conversationChange: of("conversationChange"),
      refresh: of("refresh"),
    };
  };
  const perSession = perKind("SESSION");
  const perUser = perKind("USER");
  const fanOutPerUser = rate("EDGE_RATE_FAN_OUT_PER_USER", fanOutPerUserDefault.perSecond, fanOutPerUserDefault.burst);
  return { perSession, perUser, fanOutPerUser };
}

export function loadEdgeConfig(environment: Environment): { config: EdgeConfig; unknownVariables: string[]; warnings: string[] } {
  const reader = new EnvironmentReader(environment, ["EDGE_"]);
  const warnings: string[] = [];
  const mode = reader.oneOf("EDGE_AUTH_MODE", "jwks", ["dev", "jwks"]);
  let auth: EdgeAuthConfig;
  if (mode === "dev") {
    // NODE_ENV is not ours, but a production image sets it (Dockerfile): dev mode there is a mistake.
    if (environment["NODE_ENV"] === "production") {
      throw new ConfigError(
        "EDGE_AUTH_MODE=dev is refused with NODE_ENV=production: dev mode signs a token for any user; use EDGE_AUTH_MODE=jwks",
      );
    }
    auth = { mode, devKeyDirectory: reader.string("EDGE_DEV_KEY_DIR", defaultDevKeyDirectory) };
  } else {
    const jwksUrl = reader.optionalString("EDGE_JWKS_URL");
    const jwksFile = reader.optionalString("EDGE_JWKS_FILE");
    const issuer = reader.optionalString("EDGE_JWT_ISSUER");
    const audience = reader.optionalString("EDGE_JWT_AUDIENCE");
    if ((jwksUrl === undefined) === (jwksFile === undefined))
      throw new ConfigError(`exactly one of EDGE_JWKS_URL and EDGE_JWKS_FILE is needed. ${jwksSettingsHint}`);
    if (issuer === undefined || audience === undefined)
      throw new ConfigError(`EDGE_JWT_ISSUER and EDGE_JWT_AUDIENCE are needed. ${jwksSettingsHint}`);
    const urlProblem = jwksUrl === undefined ? undefined : jwksUrlProblem(jwksUrl);
    if (urlProblem !== undefined) throw new ConfigError(urlProblem);
    const jwksCooldownMs = reader.integer("EDGE_JWKS_COOLDOWN_MS", 30_000, 1000, 3_600_000);
    const jwksCacheMaxAgeMs = reader.integer("EDGE_JWKS_CACHE_MAX_AGE_MS", 600_000, 1000, 86_400_000);
    auth = { mode, jwksUrl, jwksFile, issuer, audience, jwksCooldownMs, jwksCacheMaxAgeMs };
  }
  const allowedOriginsText = reader.optionalString("EDGE_ALLOWED_ORIGINS");
  const trustedProxiesText = reader.optionalString("EDGE_TRUSTED_PROXIES");
  const admission: EdgeAdmissionConfig = {
    allowedOrigins: listOf(allowedOriginsText).map((origin) => parseListed("EDGE_ALLOWED_ORIGINS", origin, parseAllowedOrigin)),
    // A list replaces the default, in both modes: what is listed is all that is allowed.
    loopbackOriginsAllowed: mode === "dev" && allowedOriginsText === undefined,
    connectionsPerAddressMax: reader.integer("EDGE_CONNECTIONS_PER_ADDRESS_MAX", 100, 1, 1_000_000),
    unauthenticatedMax: reader.integer("EDGE_UNAUTHENTICATED_MAX", 1000, 1, 1_000_000),
    trustedProxies: listOf(trustedProxiesText).map((proxy) => parseListed("EDGE_TRUSTED_PROXIES", proxy, parseTrustedProxy)),
  };
  const config: EdgeConfig = {
    ...tracingField(environment),
    namespace: reader.string("CELLWIRE_NAMESPACE", "cellwire", namespacePattern),
    natsServers: reader
      .string("CELLWIRE_NATS_SERVERS", "127.0.0.1:4222")
      .split(",")
      .map((server) => server.trim())
      .filter((server) => server !== ""),
    natsAccess: readNatsAccess(reader, "edge"),
    edgeId: reader.string("EDGE_ID", "1", /^[a-z0-9][a-z0-9-]{0,31}$/),
    logLevel: reader.oneOf("EDGE_LOG_LEVEL", logLevelDefault, logLevels),
    host: reader.string("EDGE_HOST", "127.0.0.1"),
    port: reader.integer("EDGE_PORT", 8080, 0, 65535),
    auth,
    admission,
    authTimeoutMs: reader.integer("EDGE_AUTH_TIMEOUT_MS", 5000, 100, 60_000),
    clockToleranceMs: reader.integer("EDGE_CLOCK_TOLERANCE_MS", 30_000, 0, 300_000),
    revocationsMax: reader.integer("EDGE_REVOCATIONS_MAX", 100_000, 1, 10_000_000),
    revocationRetentionMs: reader.integer("EDGE_REVOCATION_RETENTION_MS", 86_400_000, 1000, 30 * 86_400_000),
    heartbeatIntervalMs: reader.integer("EDGE_HEARTBEAT_INTERVAL_MS", 25_000, 1000, 600_000),
    idleTimeoutMs: reader.integer("EDGE_IDLE_TIMEOUT_MS", 120_000, 8000, 960_000),
    sessionsMax: reader.integer("EDGE_SESSIONS_MAX", 15_000, 1, 1_000_000),
    sessionsPerUserMax: reader.integer("EDGE_SESSIONS_PER_USER_MAX", 16, 1, 1000),
    requestsInFlightPerSessionMax: reader.integer("EDGE_REQUESTS_IN_FLIGHT_PER_SESSION_MAX", 64, 1, 10_000),
    requestsInFlightMax: reader.integer("EDGE_REQUESTS_IN_FLIGHT_MAX", 20_000, 1, 10_000_000),
    overloadedRetryAfterMs: reader.integer("EDGE_OVERLOADED_RETRY_AFTER_MS", 250, 1, 60_000),
    sendBufferBytesMax: reader.integer("EDGE_SEND_BUFFER_BYTES_MAX", 1024 * 1024, 16 * 1024, 256 * 1024 * 1024),
    heldEventsPerSessionMax: reader.integer("EDGE_HELD_EVENTS_PER_SESSION_MAX", 1000, 1, 1_000_000),
    heldBytesPerSessionMax: reader.integer("EDGE_HELD_BYTES_PER_SESSION_MAX", 1024 * 1024, 64 * 1024, 1024 * 1024 * 1024),
    conversationsPerSessionMax: reader.integer("EDGE_CONVERSATIONS_PER_SESSION_MAX", 10_000, 1, 1_000_000),
    conversationReadsPerSessionMax: reader.integer("EDGE_CONVERSATION_READS_PER_SESSION_MAX", 8, 1, 1000),
    conversationReadsInFlightMax: reader.integer("EDGE_CONVERSATION_READS_IN_FLIGHT_MAX", 256, 1, 100_000),
    catchUpSpreadMs: reader.integer("EDGE_CATCH_UP_SPREAD_MS", 2000, 0, 60_000),
    catchUpReadsInFlightMax: reader.integer("EDGE_CATCH_UP_READS_IN_FLIGHT_MAX", 64, 1, 100_000),
    directoryCacheEntriesMax: reader.integer("EDGE_DIRECTORY_CACHE_ENTRIES_MAX", 100_000, 1, 10_000_000),
    directoryCacheTtlMs: reader.integer("EDGE_DIRECTORY_CACHE_TTL_MS", 60_000, 1, 86_400_000),
    directoryTimeoutMs: reader.integer("EDGE_DIRECTORY_TIMEOUT_MS", 2000, 50, 60_000),
    requestDeadlineMs: reader.integer("EDGE_REQUEST_DEADLINE_MS", 8000, 100, 120_000),
    sendOrderHoldMs: reader.integer("EDGE_SEND_ORDER_HOLD_MS", 5000, 0, 120_000),
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
    drainMs: reader.integer("EDGE_DRAIN_MS", 5000, 0, 300_000),
    drainGraceMs: reader.integer("EDGE_DRAIN_GRACE_MS", 5000, 0, 300_000),
    rateLimits: readRateLimits(reader),
    presencePolicy: reader.oneOf("EDGE_PRESENCE_POLICY", "shared_conversation", presencePolicies),
    presenceAccessPairsMax: reader.integer("EDGE_PRESENCE_ACCESS_PAIRS_MAX", 100_000, 1, 100_000_000),
    presenceAccessTtlMs: reader.integer("EDGE_PRESENCE_ACCESS_TTL_MS", 60_000, 0, 3_600_000),
    directConversationKey: reader.optionalString("CELLWIRE_DIRECT_CONVERSATION_KEY") ?? (mode === "dev" ? devDirectConversationKey : ""),
  };
  if (config.directConversationKey.length < directConversationKeyLengthMin) {
    throw new ConfigError(
      `CELLWIRE_DIRECT_CONVERSATION_KEY must be set, with at least ${directConversationKeyLengthMin} characters (EDGE_AUTH_MODE=jwks has no default)`,
    );
  }
  if (mode === "jwks" && config.directConversationKey === devDirectConversationKey) {
    throw new ConfigError("CELLWIRE_DIRECT_CONVERSATION_KEY is the public dev key: EDGE_AUTH_MODE=jwks needs a secret of its own");
  }
  if (config.presenceTtlMs < 2 * config.presenceHeartbeatIntervalMs) {
    throw new ConfigError(
      "EDGE_PRESENCE_TTL_MS must be at least twice EDGE_PRESENCE_HEARTBEAT_INTERVAL_MS, so one late heartbeat does not flap presence",
    );
  }
  if (config.typingExpiresInMs <= config.typingIntervalMs) {
    throw new ConfigError(
      "EDGE_TYPING_EXPIRES_IN_MS must exceed EDGE_TYPING_INTERVAL_MS, so a typist can refresh an indicator before it lapses",
    );
  }
  if (config.natsServers.length === 0) throw new ConfigError("CELLWIRE_NATS_SERVERS must name at least one server");
  if (config.auth.mode === "jwks" && config.webDirectory !== undefined)
    throw new ConfigError("EDGE_WEB_DIR is a dev-mode feature; unset it with EDGE_AUTH_MODE=jwks");
  if (config.auth.mode === "dev" && !isLoopbackHost(config.host)) {
    warnings.push(
      `DEV MODE ON A NON-LOOPBACK ADDRESS (EDGE_HOST=${config.host}): anyone who reaches this edge can get a token for any user from /dev/token. ` +
        "Use EDGE_AUTH_MODE=jwks beyond your own machine.",
    );
  }
  return { config, unknownVariables: reader.unknownVariables(), warnings };
}

function listOf(text: string | undefined): string[] {
  return (text ?? "")
    .split(",")
    .map((item) => item.trim())
    .filter((item) => item !== "");
}

function parseListed<T>(name: string, item: string, parse: (item: string) => T | undefined): T {
  const value = parse(item);
  if (value === undefined) throw new ConfigError(`${name} has an entry it cannot read: ${JSON.stringify(item)}`);
  return value;
}
