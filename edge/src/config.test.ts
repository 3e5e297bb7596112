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
  it("fills every field with its documented default from an empty environment", () => {
    const { config, unknownVariables } = loadEdgeConfig({});
    expect(unknownVariables).toEqual([]);
    expect(config).toEqual({
      namespace: "cellwire",
      natsServers: ["127.0.0.1:4222"],
      edgeId: "1",
      host: "127.0.0.1",
      port: 8080,
      auth: { mode: "dev", devKeyDirectory: defaultDevKeyDirectory },
      authTimeoutMs: 5000,
      heartbeatIntervalMs: 25_000,
      idleTimeoutMs: 120_000,
      sessionsMax: 15_000,
      sessionsPerUserMax: 16,
      requestsInFlightPerSessionMax: 64,
      requestsInFlightMax: 20_000,
      overloadedRetryAfterMs: 250,
      sendBufferBytesMax: 1024 * 1024,
      heldEventsPerSessionMax: 1000,
      conversationsPerSessionMax: 10_000,
      conversationReadsPerSessionMax: 8,
      conversationReadsInFlightMax: 256,
      directoryCacheEntriesMax: 100_000,
      directoryCacheTtlMs: 60_000,
      directoryTimeoutMs: 2000,
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
      presencePolicy: "shared_conversation",
      presenceAccessPairsMax: 100_000,
      presenceAccessTtlMs: 60_000,
      directConversationKey: devDirectConversationKey,
    });
  });

  it("reads the typing and presence settings", () => {
    const { config, unknownVariables } = loadEdgeConfig({
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
    expect(configError({ EDGE_PRESENCE_POLICY: "friends" }).message).toContain("EDGE_PRESENCE_POLICY");
  });

  it("reads the bounds on conversation cursors and log reads, and on requests across the edge", () => {
    const { config, unknownVariables } = loadEdgeConfig({
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
    expect(configError({ EDGE_PRESENCE_HEARTBEAT_INTERVAL_MS: "1000", EDGE_PRESENCE_TTL_MS: "1999" }).message).toContain("EDGE_PRESENCE_TTL_MS");
    expect(loadEdgeConfig({ EDGE_PRESENCE_HEARTBEAT_INTERVAL_MS: "1000", EDGE_PRESENCE_TTL_MS: "2000" }).config.presenceTtlMs).toBe(2000);
    expect(configError({ EDGE_TYPING_EXPIRES_IN_MS: "1000", EDGE_TYPING_INTERVAL_MS: "1000" }).message).toContain("EDGE_TYPING_EXPIRES_IN_MS");
    expect(configError({ EDGE_TYPING_EXPIRES_IN_MS: "60001" }).message).toContain("EDGE_TYPING_EXPIRES_IN_MS");
  });

  it("reads overrides, the shared variables included", () => {
    const { config } = loadEdgeConfig({
      CELLWIRE_NAMESPACE: "t_edge",
      CELLWIRE_NATS_SERVERS: " 10.0.0.1:4222 , ,10.0.0.2:4222",
      EDGE_ID: "2",
      EDGE_PORT: "0",
      EDGE_SESSIONS_PER_USER_MAX: "3",
      EDGE_DEV_KEY_DIR: "/tmp/keys",
      EDGE_WEB_DIR: "/srv/web",
    });
    expect(config.namespace).toBe("t_edge");
    expect(config.natsServers).toEqual(["10.0.0.1:4222", "10.0.0.2:4222"]);
    expect(config.edgeId).toBe("2");
    expect(config.port).toBe(0);
    expect(config.sessionsPerUserMax).toBe(3);
    expect(config.auth).toEqual({ mode: "dev", devKeyDirectory: "/tmp/keys" });
    expect(config.webDirectory).toBe("/srv/web");
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
    });
  });

  it("accepts jwks mode with a JWKS URL instead of a file", () => {
    const { EDGE_JWKS_FILE: _file, ...rest } = jwksFileMode;
    const { config } = loadEdgeConfig({ ...rest, EDGE_JWKS_URL: "https://issuer.example/.well-known/jwks.json" });
    expect(config.auth).toMatchObject({ mode: "jwks", jwksUrl: "https://issuer.example/.well-known/jwks.json", jwksFile: undefined });
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
    expect(loadEdgeConfig({}).config.directConversationKey).toBe(devDirectConversationKey);
    expect(loadEdgeConfig({ CELLWIRE_DIRECT_CONVERSATION_KEY: deploymentKey }).config.directConversationKey).toBe(deploymentKey);
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
    expect(configError({ [name]: value }).message).toContain(name);
  });

  it("refuses a namespace or an edge id that could not name a subject or a process", () => {
    expect(configError({ CELLWIRE_NAMESPACE: "Bad.Namespace" }).message).toContain("CELLWIRE_NAMESPACE");
    expect(configError({ EDGE_ID: "edge one" }).message).toContain("EDGE_ID");
  });

  it("refuses a NATS server list with no server in it", () => {
    expect(configError({ CELLWIRE_NATS_SERVERS: " , " }).message).toContain("CELLWIRE_NATS_SERVERS");
  });

  it("reports unknown EDGE_ variables (likely typos) and ignores everything else", () => {
    const { unknownVariables } = loadEdgeConfig({
      EDGE_PROT: "8081",
      EDGE_SESIONS_MAX: "10",
      EDGE_PORT: "8081",
      PATH: "/usr/bin",
      DIRECTORY_PORT: "1",
    });
    expect(unknownVariables).toEqual(["EDGE_PROT", "EDGE_SESIONS_MAX"]);
  });

  it("reports the settings of the other auth mode, which would be silently ignored", () => {
    expect(loadEdgeConfig({ EDGE_JWKS_FILE: "/etc/jwks.json" }).unknownVariables).toEqual(["EDGE_JWKS_FILE"]);
    expect(loadEdgeConfig({ ...jwksFileMode, EDGE_DEV_KEY_DIR: "/tmp/keys" }).unknownVariables).toEqual(["EDGE_DEV_KEY_DIR"]);
  });
});
