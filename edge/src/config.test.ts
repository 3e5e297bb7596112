import { describe, expect, it } from "vitest";
import { ConfigError, devDirectConversationKey, type Environment } from "@cellwire/cluster";
import { defaultDevKeyDirectory } from "./auth/dev-keys.ts";
import { loadEdgeConfig } from "./config.ts";

const deploymentKey = "this deployment's own secret, 32 characters or more";

const jwksFileMode = {
  EDGE_AUTH_MODE: "jwks",
  CELLWIRE_DIRECT_CONVERSATION_KEY: deploymentKey,
  EDGE_JWKS_FILE: "/etc/cellwire/jwks.json",
  EDGE_JWT_ISSUER: "https://issuer.example",
  EDGE_JWT_AUDIENCE: "cellwire",
} as const satisfies Environment;

/** Dev mode is asked for, never fallen into: the settings below were the defaults' before it was opt-in. */
const devMode = { EDGE_AUTH_MODE: "dev" } as const satisfies Environment;

function configError(environment: Environment): ConfigError {
  try {
    loadEdgeConfig(environment);
  } catch (error) {
    if (error instanceof ConfigError) return error;
    throw error;
  }
  throw new Error(`loadEdgeConfig accepted ${JSON.stringify(environment)}`);
}

describe("loadEdgeConfig", () => {
  it("fills every field with its documented default in jwks mode, the mode of an edge that names none", () => {
    const { config, unknownVariables, warnings } = loadEdgeConfig(jwksFileMode);
    expect(unknownVariables).toEqual([]);
    expect(warnings).toEqual([]);
    expect(config).toEqual({
      namespace: "cellwire",
      natsServers: ["127.0.0.1:4222"],
      natsAccess: { service: "edge", inboxPrefix: "_INBOX.edge" },
      edgeId: "1",
      logLevel: "info",
      host: "127.0.0.1",
      port: 8080,
      auth: {
        mode: "jwks",
        jwksUrl: undefined,
        jwksFile: "/etc/cellwire/jwks.json",
        issuer: "https://issuer.example",
        audience: "cellwire",
        jwksCooldownMs: 30_000,
        jwksCacheMaxAgeMs: 600_000,
      },
      admission: {
        allowedOrigins: [],
        loopbackOriginsAllowed: false,
        connectionsPerAddressMax: 100,
        unauthenticatedMax: 1000,
        trustedProxies: [],
      },
      authTimeoutMs: 5000,
      clockToleranceMs: 30_000,
      revocationsMax: 100_000,
      revocationRetentionMs: 86_400_000,
      heartbeatIntervalMs: 25_000,
      idleTimeoutMs: 120_000,
      sessionsMax: 15_000,
      sessionsPerUserMax: 16,
      requestsInFlightPerSessionMax: 64,
      requestsInFlightMax: 20_000,
      overloadedRetryAfterMs: 250,
      sendBufferBytesMax: 1024 * 1024,
      heldEventsPerSessionMax: 1000,
      heldBytesPerSessionMax: 1024 * 1024,
      conversationsPerSessionMax: 10_000,
      conversationReadsPerSessionMax: 8,
      conversationReadsInFlightMax: 256,
      catchUpSpreadMs: 2000,
      catchUpReadsInFlightMax: 64,
      directoryCacheEntriesMax: 100_000,
      directoryCacheTtlMs: 60_000,
      directoryTimeoutMs: 2000,
      requestDeadlineMs: 8000,
      sendOrderHoldMs: 5000,
      cellRequestTimeoutMs: 3000,
      cellRequestAttemptsMax: 40,
      cellRequestDeadlineMs: 8000,
      migrationWaitMs: 5000,
      leaseMs: 1500,
      webDirectory: undefined,
      typingExpiresInMs: 5000,
      typingIntervalMs: 1000,
      typingConversationsPerSessionMax: 4,
      memberCacheConversationsMax: 10_000,
      memberCacheTtlMs: 10_000,
      presenceHeartbeatIntervalMs: 5000,
      presenceTtlMs: 15_000,
      presenceRemoteClaimsMax: 1_000_000,
      drainMs: 5000,
      drainGraceMs: 5000,
      rateLimits: {
        perSession: {
          send: { perSecond: 20, burst: 40 },
          typing: { perSecond: 4, burst: 8 },
          history: { perSecond: 10, burst: 50 },
          conversationChange: { perSecond: 5, burst: 50 },
          refresh: { perSecond: 1, burst: 1 },
        },
        perUser: {
          send: { perSecond: 40, burst: 80 },
          typing: { perSecond: 8, burst: 16 },
          history: { perSecond: 20, burst: 100 },
          conversationChange: { perSecond: 10, burst: 100 },
          refresh: { perSecond: 10, burst: 20 },
        },
        fanOutPerUser: { perSecond: 2000, burst: 20_000 },
      },
      presencePolicy: "shared_conversation",
      presenceAccessPairsMax: 100_000,
      presenceAccessTtlMs: 60_000,
      directConversationKey: deploymentKey,
    });
  });

  it("reads EDGE_LOG_LEVEL, one of pino's levels, and refuses any other", () => {
    expect(loadEdgeConfig({ ...devMode, EDGE_LOG_LEVEL: "debug" }).config.logLevel).toBe("debug");
    expect(loadEdgeConfig({ ...devMode, EDGE_LOG_LEVEL: "silent" }).config.logLevel).toBe("silent");
    expect(configError({ ...devMode, EDGE_LOG_LEVEL: "verbose" }).message).toMatch(
      /^EDGE_LOG_LEVEL="verbose" must be one of trace, debug, info/,
    );
  });

  it("reads the drain window and its grace period, 0 included", () => {
    const { config, unknownVariables } = loadEdgeConfig({ ...devMode, EDGE_DRAIN_MS: "0", EDGE_DRAIN_GRACE_MS: "1500" });
    expect(unknownVariables).toEqual([]);
    expect(config).toMatchObject({ drainMs: 0, drainGraceMs: 1500 });
    expect(configError({ ...devMode, EDGE_DRAIN_MS: "-1" }).message).toContain("EDGE_DRAIN_MS");
    expect(configError({ ...devMode, EDGE_DRAIN_GRACE_MS: "soon" }).message).toContain("EDGE_DRAIN_GRACE_MS");
  });

  it("reads the catch-up window (0 reads at once) and the catch-up reads in flight", () => {
    const { config, unknownVariables } = loadEdgeConfig({
      ...devMode,
      EDGE_CATCH_UP_SPREAD_MS: "0",
      EDGE_CATCH_UP_READS_IN_FLIGHT_MAX: "8",
    });
    expect(unknownVariables).toEqual([]);
    expect(config).toMatchObject({ catchUpSpreadMs: 0, catchUpReadsInFlightMax: 8 });
    expect(configError({ ...devMode, EDGE_CATCH_UP_SPREAD_MS: "60001" }).message).toContain("EDGE_CATCH_UP_SPREAD_MS");
    expect(configError({ ...devMode, EDGE_CATCH_UP_READS_IN_FLIGHT_MAX: "0" }).message).toContain("EDGE_CATCH_UP_READS_IN_FLIGHT_MAX");
  });

  it("refuses to start with no settings at all: jwks is the default, and the message names what to set", () => {
    const message = configError({}).message;
    expect(message).toMatch(/EDGE_AUTH_MODE is jwks unless set/);
    for (const name of ["EDGE_JWKS_URL", "EDGE_JWKS_FILE", "EDGE_JWT_ISSUER", "EDGE_JWT_AUDIENCE", "EDGE_AUTH_MODE=dev"])
      expect(message).toContain(name);
  });

  it("runs dev mode only when EDGE_AUTH_MODE=dev asks for it, on loopback, with loopback origins allowed", () => {
    const { config, unknownVariables, warnings } = loadEdgeConfig(devMode);
    expect(unknownVariables).toEqual([]);
    expect(warnings).toEqual([]);
    expect(config.auth).toEqual({ mode: "dev", devKeyDirectory: defaultDevKeyDirectory });
    expect(config.host).toBe("127.0.0.1");
    expect(config.admission).toEqual({
      allowedOrigins: [],
      loopbackOriginsAllowed: true,
      connectionsPerAddressMax: 100,
      unauthenticatedMax: 1000,
      trustedProxies: [],
    });
  });

  it("refuses dev mode outright with NODE_ENV=production, and accepts jwks mode there", () => {
    expect(configError({ ...devMode, NODE_ENV: "production" }).message).toMatch(/EDGE_AUTH_MODE=dev is refused with NODE_ENV=production/);
    expect(loadEdgeConfig({ ...jwksFileMode, NODE_ENV: "production" }).config.auth.mode).toBe("jwks");
    expect(loadEdgeConfig({ ...devMode, NODE_ENV: "development" }).config.auth.mode).toBe("dev");
  });

  it("warns loudly when dev mode listens beyond loopback, and only then", () => {
    for (const host of ["0.0.0.0", "::", "192.168.1.10"]) {
      const { warnings } = loadEdgeConfig({ ...devMode, EDGE_HOST: host });
      expect(warnings, host).toHaveLength(1);
      expect(warnings[0], host).toMatch(/^DEV MODE ON A NON-LOOPBACK ADDRESS/);
      expect(warnings[0], host).toContain(host);
    }
    for (const host of ["127.0.0.1", "127.0.0.2", "::1", "localhost"])
      expect(loadEdgeConfig({ ...devMode, EDGE_HOST: host }).warnings, host).toEqual([]);
    expect(loadEdgeConfig({ ...jwksFileMode, EDGE_HOST: "0.0.0.0" }).warnings).toEqual([]);
  });

  it("reads the admission settings; a list of origins replaces dev mode's loopback default", () => {
    const { config, unknownVariables } = loadEdgeConfig({
      ...devMode,
      EDGE_ALLOWED_ORIGINS: " https://App.Example.com , http://localhost:3000,",
      EDGE_CONNECTIONS_PER_ADDRESS_MAX: "20",
      EDGE_UNAUTHENTICATED_MAX: "50",
      EDGE_TRUSTED_PROXIES: "10.0.0.0/8, 192.168.1.7,fd00::/8",
    });
    expect(unknownVariables).toEqual([]);
    expect(config.admission).toEqual({
      allowedOrigins: ["https://app.example.com", "http://localhost:3000"],
      loopbackOriginsAllowed: false,
      connectionsPerAddressMax: 20,
      unauthenticatedMax: 50,
      trustedProxies: ["10.0.0.0/8", "192.168.1.7", "fd00::/8"],
    });
    expect(loadEdgeConfig({ ...jwksFileMode, EDGE_ALLOWED_ORIGINS: "*" }).config.admission.allowedOrigins).toEqual(["*"]);
  });

  it.each([
    ["EDGE_ALLOWED_ORIGINS", "app.example.com"],
    ["EDGE_ALLOWED_ORIGINS", "https://app.example.com/path"],
    ["EDGE_ALLOWED_ORIGINS", "ftp://app.example.com"],
    ["EDGE_TRUSTED_PROXIES", "10.0.0.0/33"],
    ["EDGE_TRUSTED_PROXIES", "proxy.internal"],
    ["EDGE_CONNECTIONS_PER_ADDRESS_MAX", "0"],
    ["EDGE_UNAUTHENTICATED_MAX", "0"],
  ])("refuses the admission setting %s=%j, naming the variable", (name, value) => {
    expect(configError({ ...jwksFileMode, [name]: value }).message).toContain(name);
  });

  it("reads every rate limit, per session and per user, and refuses a rate of 0", () => {
    const { config, unknownVariables } = loadEdgeConfig({
      ...devMode,
      EDGE_RATE_SENDS_PER_SESSION_PER_SECOND: "5",
      EDGE_RATE_SENDS_PER_SESSION_BURST: "6",
      EDGE_RATE_SENDS_PER_USER_PER_SECOND: "7",
      EDGE_RATE_SENDS_PER_USER_BURST: "8",
      EDGE_RATE_TYPING_PER_SESSION_PER_SECOND: "9",
      EDGE_RATE_TYPING_PER_SESSION_BURST: "10",
      EDGE_RATE_TYPING_PER_USER_PER_SECOND: "11",
      EDGE_RATE_TYPING_PER_USER_BURST: "12",
      EDGE_RATE_HISTORY_PER_SESSION_PER_SECOND: "13",
      EDGE_RATE_HISTORY_PER_SESSION_BURST: "14",
      EDGE_RATE_HISTORY_PER_USER_PER_SECOND: "15",
      EDGE_RATE_HISTORY_PER_USER_BURST: "16",
      EDGE_RATE_CONVERSATION_CHANGES_PER_SESSION_PER_SECOND: "17",
      EDGE_RATE_CONVERSATION_CHANGES_PER_SESSION_BURST: "18",
      EDGE_RATE_CONVERSATION_CHANGES_PER_USER_PER_SECOND: "19",
      EDGE_RATE_CONVERSATION_CHANGES_PER_USER_BURST: "20",
      EDGE_RATE_REFRESHES_PER_SESSION_PER_SECOND: "23",
      EDGE_RATE_REFRESHES_PER_SESSION_BURST: "24",
      EDGE_RATE_REFRESHES_PER_USER_PER_SECOND: "25",
      EDGE_RATE_REFRESHES_PER_USER_BURST: "26",
      EDGE_RATE_FAN_OUT_PER_USER_PER_SECOND: "21",
      EDGE_RATE_FAN_OUT_PER_USER_BURST: "22",
    });
    expect(unknownVariables).toEqual([]);
    expect(config.rateLimits).toEqual({
      perSession: {
        send: { perSecond: 5, burst: 6 },
        typing: { perSecond: 9, burst: 10 },
        history: { perSecond: 13, burst: 14 },
        conversationChange: { perSecond: 17, burst: 18 },
        refresh: { perSecond: 23, burst: 24 },
      },
      perUser: {
        send: { perSecond: 7, burst: 8 },
        typing: { perSecond: 11, burst: 12 },
        history: { perSecond: 15, burst: 16 },
        conversationChange: { perSecond: 19, burst: 20 },
        refresh: { perSecond: 25, burst: 26 },
      },
      fanOutPerUser: { perSecond: 21, burst: 22 },
    });
    expect(configError({ ...devMode, EDGE_RATE_SENDS_PER_SESSION_PER_SECOND: "0" }).message).toMatch(
      /EDGE_RATE_SENDS_PER_SESSION_PER_SECOND/,
    );
    expect(configError({ ...devMode, EDGE_RATE_FAN_OUT_PER_USER_BURST: "0" }).message).toMatch(/EDGE_RATE_FAN_OUT_PER_USER_BURST/);
    // A misspelt one is reported, not silently ignored.
    expect(loadEdgeConfig({ ...devMode, EDGE_RATE_SEND_PER_SESSION_PER_SECOND: "5" }).unknownVariables).toEqual([
      "EDGE_RATE_SEND_PER_SESSION_PER_SECOND",
    ]);
  });

  it("reads the typing and presence settings", () => {
    const { config, unknownVariables } = loadEdgeConfig({
      ...devMode,
      EDGE_TYPING_EXPIRES_IN_MS: "3000",
      EDGE_TYPING_INTERVAL_MS: "500",
      EDGE_TYPING_CONVERSATIONS_PER_SESSION_MAX: "2",
      EDGE_MEMBER_CACHE_CONVERSATIONS_MAX: "50",
      EDGE_MEMBER_CACHE_TTL_MS: "2000",
      EDGE_PRESENCE_HEARTBEAT_INTERVAL_MS: "250",
      EDGE_PRESENCE_TTL_MS: "1000",
      EDGE_PRESENCE_REMOTE_CLAIMS_MAX: "100",
      EDGE_PRESENCE_POLICY: "everyone",
      EDGE_PRESENCE_ACCESS_PAIRS_MAX: "500",
      EDGE_PRESENCE_ACCESS_TTL_MS: "0",
    });
    expect(unknownVariables).toEqual([]);
    expect(config).toMatchObject({
      typingExpiresInMs: 3000,
      typingIntervalMs: 500,
      typingConversationsPerSessionMax: 2,
      memberCacheConversationsMax: 50,
      memberCacheTtlMs: 2000,
      presenceHeartbeatIntervalMs: 250,
      presenceTtlMs: 1000,
      presenceRemoteClaimsMax: 100,
      presencePolicy: "everyone",
      presenceAccessPairsMax: 500,
      presenceAccessTtlMs: 0,
    });
    expect(configError({ ...devMode, EDGE_PRESENCE_POLICY: "friends" }).message).toContain("EDGE_PRESENCE_POLICY");
  });

  it("reads the bounds on conversation cursors and log reads, and on requests across the edge", () => {
    const { config, unknownVariables } = loadEdgeConfig({
      ...devMode,
      EDGE_CONVERSATIONS_PER_SESSION_MAX: "50",
      EDGE_CONVERSATION_READS_PER_SESSION_MAX: "2",
      EDGE_CONVERSATION_READS_IN_FLIGHT_MAX: "16",
      EDGE_REQUESTS_IN_FLIGHT_MAX: "500",
      EDGE_OVERLOADED_RETRY_AFTER_MS: "1000",
    });
    expect(unknownVariables).toEqual([]);
    expect(config).toMatchObject({
      conversationsPerSessionMax: 50,
      conversationReadsPerSessionMax: 2,
      conversationReadsInFlightMax: 16,
      requestsInFlightMax: 500,
      overloadedRetryAfterMs: 1000,
    });
  });

  it("refuses a presence TTL under two heartbeats, and typing that lapses before it may be refreshed", () => {
    expect(configError({ ...devMode, EDGE_PRESENCE_HEARTBEAT_INTERVAL_MS: "1000", EDGE_PRESENCE_TTL_MS: "1999" }).message).toContain(
      "EDGE_PRESENCE_TTL_MS",
    );
    expect(
      loadEdgeConfig({ ...devMode, EDGE_PRESENCE_HEARTBEAT_INTERVAL_MS: "1000", EDGE_PRESENCE_TTL_MS: "2000" }).config.presenceTtlMs,
    ).toBe(2000);
    expect(configError({ ...devMode, EDGE_TYPING_EXPIRES_IN_MS: "1000", EDGE_TYPING_INTERVAL_MS: "1000" }).message).toContain(
      "EDGE_TYPING_EXPIRES_IN_MS",
    );
    expect(configError({ ...devMode, EDGE_TYPING_EXPIRES_IN_MS: "60001" }).message).toContain("EDGE_TYPING_EXPIRES_IN_MS");
  });

  it("reads overrides, the shared variables included", () => {
    const { config } = loadEdgeConfig({
      ...devMode,
      CELLWIRE_NAMESPACE: "t_edge",
      CELLWIRE_NATS_SERVERS: " 10.0.0.1:4222 , ,10.0.0.2:4222",
      EDGE_ID: "2",
      EDGE_PORT: "0",
      EDGE_SESSIONS_PER_USER_MAX: "3",
      EDGE_DEV_KEY_DIR: "/tmp/keys",
      EDGE_WEB_DIR: "/srv/web",
      EDGE_REQUEST_DEADLINE_MS: "6000",
      EDGE_SEND_ORDER_HOLD_MS: "2000",
    });
    expect(config.namespace).toBe("t_edge");
    expect(config.natsServers).toEqual(["10.0.0.1:4222", "10.0.0.2:4222"]);
    expect(config.edgeId).toBe("2");
    expect(config.port).toBe(0);
    expect(config.sessionsPerUserMax).toBe(3);
    expect(config.auth).toEqual({ mode: "dev", devKeyDirectory: "/tmp/keys" });
    expect(config.webDirectory).toBe("/srv/web");
    expect(config.requestDeadlineMs).toBe(6000);
    expect(config.sendOrderHoldMs).toBe(2000);
  });

  it("accepts jwks mode with a JWKS file, an issuer and an audience", () => {
    const { config, unknownVariables } = loadEdgeConfig(jwksFileMode);
    expect(unknownVariables).toEqual([]);
    expect(config.auth).toEqual({
      mode: "jwks",
      jwksUrl: undefined,
      jwksFile: "/etc/cellwire/jwks.json",
      issuer: "https://issuer.example",
      audience: "cellwire",
      jwksCooldownMs: 30_000,
      jwksCacheMaxAgeMs: 600_000,
    });
  });

  it("accepts jwks mode with a JWKS URL instead of a file", () => {
    const { EDGE_JWKS_FILE: _file, ...rest } = jwksFileMode;
    const { config } = loadEdgeConfig({ ...rest, EDGE_JWKS_URL: "https://issuer.example/.well-known/jwks.json" });
    expect(config.auth).toMatchObject({ mode: "jwks", jwksUrl: "https://issuer.example/.well-known/jwks.json", jwksFile: undefined });
  });

  it("refuses a JWKS URL that is not https, except http on a loopback host", () => {
    const { EDGE_JWKS_FILE: _file, ...rest } = jwksFileMode;
    expect(configError({ ...rest, EDGE_JWKS_URL: "http://issuer.example/jwks.json" }).message).toMatch(/EDGE_JWKS_URL must be https/);
    expect(configError({ ...rest, EDGE_JWKS_URL: "http://10.0.0.7/jwks.json" }).message).toMatch(/EDGE_JWKS_URL must be https/);
    expect(configError({ ...rest, EDGE_JWKS_URL: "ftp://issuer.example/jwks.json" }).message).toMatch(/EDGE_JWKS_URL must be https/);
    expect(configError({ ...rest, EDGE_JWKS_URL: "not a url" }).message).toMatch(/EDGE_JWKS_URL is not a URL/);
    for (const url of [
      "http://127.0.0.1:4000/jwks.json",
      "http://localhost/jwks.json",
      "http://[::1]:9/jwks.json",
      "https://issuer.example/jwks.json",
    ]) {
      expect(loadEdgeConfig({ ...rest, EDGE_JWKS_URL: url }).config.auth).toMatchObject({ jwksUrl: url });
    }
  });

  it("reads the JWKS cooldown and cache age, the clock tolerance and the revocation bounds, within their limits", () => {
    const { config } = loadEdgeConfig({
      ...jwksFileMode,
      EDGE_JWKS_COOLDOWN_MS: "5000",
      EDGE_JWKS_CACHE_MAX_AGE_MS: "60000",
      EDGE_CLOCK_TOLERANCE_MS: "1000",
      EDGE_REVOCATIONS_MAX: "10",
      EDGE_REVOCATION_RETENTION_MS: "3600000",
    });
    expect(config.auth).toMatchObject({ jwksCooldownMs: 5000, jwksCacheMaxAgeMs: 60_000 });
    expect(config).toMatchObject({ clockToleranceMs: 1000, revocationsMax: 10, revocationRetentionMs: 3_600_000 });
    expect(() => loadEdgeConfig({ ...devMode, EDGE_CLOCK_TOLERANCE_MS: "300001" })).toThrow(/EDGE_CLOCK_TOLERANCE_MS/);
    expect(() => loadEdgeConfig({ ...devMode, EDGE_CLOCK_TOLERANCE_MS: "-1" })).toThrow(/EDGE_CLOCK_TOLERANCE_MS/);
    expect(() => loadEdgeConfig({ ...jwksFileMode, EDGE_JWKS_COOLDOWN_MS: "10" })).toThrow(/EDGE_JWKS_COOLDOWN_MS/);
    expect(() => loadEdgeConfig({ ...devMode, EDGE_REVOCATIONS_MAX: "0" })).toThrow(/EDGE_REVOCATIONS_MAX/);
  });

  it("refuses jwks mode with neither or both of EDGE_JWKS_URL and EDGE_JWKS_FILE", () => {
    const { EDGE_JWKS_FILE: _file, ...neither } = jwksFileMode;
    expect(configError(neither).message).toMatch(/exactly one of EDGE_JWKS_URL and EDGE_JWKS_FILE/);
    expect(configError({ ...jwksFileMode, EDGE_JWKS_URL: "https://issuer.example/jwks" }).message).toMatch(/exactly one/);
  });

  it("needs a secret direct conversation key of its own in jwks mode; a dev edge defaults to the public dev key", () => {
    expect(loadEdgeConfig(jwksFileMode).config.directConversationKey).toBe(deploymentKey);
    const { CELLWIRE_DIRECT_CONVERSATION_KEY: _key, ...noKey } = jwksFileMode;
    expect(configError(noKey).message).toMatch(/CELLWIRE_DIRECT_CONVERSATION_KEY must be set/);
    expect(configError({ ...jwksFileMode, CELLWIRE_DIRECT_CONVERSATION_KEY: devDirectConversationKey }).message).toMatch(/public dev key/);
    expect(configError({ ...jwksFileMode, CELLWIRE_DIRECT_CONVERSATION_KEY: "short" }).message).toMatch(/at least 32 characters/);
    expect(loadEdgeConfig(devMode).config.directConversationKey).toBe(devDirectConversationKey);
    expect(loadEdgeConfig({ ...devMode, CELLWIRE_DIRECT_CONVERSATION_KEY: deploymentKey }).config.directConversationKey).toBe(
      deploymentKey,
    );
  });

  it("refuses jwks mode without an issuer or without an audience", () => {
    const { EDGE_JWT_ISSUER: _issuer, ...noIssuer } = jwksFileMode;
    const { EDGE_JWT_AUDIENCE: _audience, ...noAudience } = jwksFileMode;
    expect(configError(noIssuer).message).toMatch(/EDGE_JWT_ISSUER/);
    expect(configError(noAudience).message).toMatch(/EDGE_JWT_AUDIENCE/);
    // An empty value counts as missing.
    expect(configError({ ...jwksFileMode, EDGE_JWT_AUDIENCE: "" }).message).toMatch(/EDGE_JWT_AUDIENCE/);
  });

  it("refuses EDGE_WEB_DIR in jwks mode: the dev page never ships with production auth", () => {
    expect(configError({ ...jwksFileMode, EDGE_WEB_DIR: "/srv/web" }).message).toMatch(/EDGE_WEB_DIR/);
  });

  it("refuses an unknown auth mode", () => {
    expect(configError({ EDGE_AUTH_MODE: "none" }).message).toMatch(/EDGE_AUTH_MODE/);
  });

  it.each([
    ["EDGE_PORT", "eighty"],
    ["EDGE_PORT", "65536"],
    ["EDGE_PORT", "-1"],
    ["EDGE_AUTH_TIMEOUT_MS", "99"],
    ["EDGE_SESSIONS_PER_USER_MAX", "0"],
    ["EDGE_SEND_BUFFER_BYTES_MAX", "1.5"],
    ["EDGE_CELL_REQUEST_ATTEMPTS_MAX", "1001"],
    // Every bound on conversations and requests is at least one, and a retry-after at most retryAfterMsMax.
    ["EDGE_CONVERSATIONS_PER_SESSION_MAX", "0"],
    ["EDGE_CONVERSATION_READS_PER_SESSION_MAX", "0"],
    ["EDGE_CONVERSATION_READS_PER_SESSION_MAX", "1001"],
    ["EDGE_CONVERSATION_READS_IN_FLIGHT_MAX", "0"],
    ["EDGE_REQUESTS_IN_FLIGHT_MAX", "0"],
    ["EDGE_OVERLOADED_RETRY_AFTER_MS", "60001"],
  ])("refuses %s=%j, naming the variable", (name, value) => {
    expect(configError({ ...devMode, [name]: value }).message).toContain(name);
  });

  it("refuses a namespace or an edge id that could not name a subject or a process", () => {
    expect(configError({ ...devMode, CELLWIRE_NAMESPACE: "Bad.Namespace" }).message).toContain("CELLWIRE_NAMESPACE");
    expect(configError({ ...devMode, EDGE_ID: "edge one" }).message).toContain("EDGE_ID");
  });

  it("refuses a NATS server list with no server in it", () => {
    expect(configError({ ...devMode, CELLWIRE_NATS_SERVERS: " , " }).message).toContain("CELLWIRE_NATS_SERVERS");
  });

  it("reports unknown EDGE_ variables (likely typos) and ignores everything else", () => {
    const { unknownVariables } = loadEdgeConfig({
      ...devMode,
      EDGE_PROT: "8081",
      EDGE_SESIONS_MAX: "10",
      EDGE_PORT: "8081",
      PATH: "/usr/bin",
      DIRECTORY_PORT: "1",
    });
    expect(unknownVariables).toEqual(["EDGE_PROT", "EDGE_SESIONS_MAX"]);
  });

  it("reports the settings of the other auth mode, which would be silently ignored", () => {
    expect(loadEdgeConfig({ ...devMode, EDGE_JWKS_FILE: "/etc/jwks.json" }).unknownVariables).toEqual(["EDGE_JWKS_FILE"]);
    expect(loadEdgeConfig({ ...jwksFileMode, EDGE_DEV_KEY_DIR: "/tmp/keys" }).unknownVariables).toEqual(["EDGE_DEV_KEY_DIR"]);
  });
});
