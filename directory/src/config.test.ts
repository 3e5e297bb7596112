import { describe, expect, it } from "vitest";
import { ConfigError } from "@cellwire/cluster";
import { directoryConfigDefaults, loadDirectoryConfig, redactRedisUrl } from "./config.ts";

describe("loadDirectoryConfig", () => {
  it("uses the defaults for an empty environment", () => {
    const { config, warnings } = loadDirectoryConfig({});
    expect(config).toEqual({
      namespace: "cellwire",
      natsServers: ["127.0.0.1:4222"],
      natsAccess: { service: "directory", inboxPrefix: "_INBOX.directory" },
      logLevel: "info",
      redisUrl: "redis://127.0.0.1:6379",
      requestsInFlightMax: directoryConfigDefaults.requestsInFlightMax,
      redisCommandTimeoutMs: directoryConfigDefaults.redisCommandTimeoutMs,
      redisReplicaAcksMin: 0,
      redisReplicaWaitMs: 500,
      adminHost: "127.0.0.1",
      adminPort: 0,
    });
    expect(warnings).toEqual([]);
  });

  it("reads every variable", () => {
    const { config } = loadDirectoryConfig({
      CELLWIRE_NAMESPACE: "t_one",
      CELLWIRE_NATS_SERVERS: "127.0.0.1:4222, 127.0.0.1:4223,",
      DIRECTORY_LOG_LEVEL: "error",
      DIRECTORY_REDIS_URL: "redis://:secret@10.0.0.5:6380/2",
      DIRECTORY_REQUESTS_IN_FLIGHT_MAX: "8",
      DIRECTORY_REDIS_COMMAND_TIMEOUT_MS: "750",
      DIRECTORY_REDIS_REPLICA_ACKS_MIN: "1",
      DIRECTORY_REDIS_REPLICA_WAIT_MS: "250",
      DIRECTORY_ADMIN_HOST: "0.0.0.0",
      DIRECTORY_ADMIN_PORT: "9465",
      CELLWIRE_NATS_USER: "directory",
      CELLWIRE_NATS_PASSWORD_FILE: "/run/secrets/nats-directory",
      CELLWIRE_NATS_TLS_CA_FILE: "/etc/cellwire/nats-ca.pem",
    });
    expect(config).toEqual({
      namespace: "t_one",
      natsServers: ["127.0.0.1:4222", "127.0.0.1:4223"],
      natsAccess: {
        service: "directory",
        user: "directory",
        passwordFile: "/run/secrets/nats-directory",
        tls: { caFile: "/etc/cellwire/nats-ca.pem" },
        inboxPrefix: "_INBOX.directory",
      },
      logLevel: "error",
      redisUrl: "redis://:secret@10.0.0.5:6380/2",
      requestsInFlightMax: 8,
      redisCommandTimeoutMs: 750,
      redisReplicaAcksMin: 1,
      redisReplicaWaitMs: 250,
      adminHost: "0.0.0.0",
      adminPort: 9465,
    });
  });

  it("refuses a DIRECTORY_LOG_LEVEL that is not one of pino's levels", () => {
    expect(() => loadDirectoryConfig({ DIRECTORY_LOG_LEVEL: "INFO" })).toThrow(
      /^DIRECTORY_LOG_LEVEL="INFO" must be one of trace, debug, info/,
    );
  });

  it("refuses a DIRECTORY_REDIS_URL that is not a Redis URL without quoting its password (the message is logged)", () => {
    const refusal = (): unknown => loadDirectoryConfig({ DIRECTORY_REDIS_URL: "http://:hunter2@10.0.0.5:6380" });
    expect(refusal).toThrow(ConfigError);
    expect(refusal).toThrow(/^DIRECTORY_REDIS_URL="http:\/\/:\*\*\*@10\.0\.0\.5:6380\/?" must match/);
    expect(refusal).not.toThrow(/hunter2/);
  });

  it("refuses an admin port out of range and an admin host with a scheme or a port", () => {
    expect(() => loadDirectoryConfig({ DIRECTORY_ADMIN_PORT: "65536" })).toThrow(ConfigError);
    expect(() => loadDirectoryConfig({ DIRECTORY_ADMIN_PORT: "-1" })).toThrow(ConfigError);
    expect(() => loadDirectoryConfig({ DIRECTORY_ADMIN_HOST: "http://0.0.0.0" })).toThrow(ConfigError);
    expect(() => loadDirectoryConfig({ DIRECTORY_ADMIN_HOST: "127.0.0.1 9465" })).toThrow(ConfigError);
  });

  it("takes a CA file for Redis over TLS, and only with a rediss:// URL", () => {
    const { config, warnings } = loadDirectoryConfig({
      DIRECTORY_REDIS_URL: "rediss://redis.internal:6380",
      DIRECTORY_REDIS_TLS_CA_FILE: "/etc/cellwire/redis-ca.pem",
    });
    expect(warnings).toEqual([]);
    expect(config).toMatchObject({ redisUrl: "rediss://redis.internal:6380", redisTlsCaFile: "/etc/cellwire/redis-ca.pem" });
    expect(() =>
      loadDirectoryConfig({ DIRECTORY_REDIS_URL: "redis://redis.internal:6379", DIRECTORY_REDIS_TLS_CA_FILE: "/ca.pem" }),
    ).toThrow("rediss://");
  });

  it("refuses a replica count or wait out of range", () => {
    expect(() => loadDirectoryConfig({ DIRECTORY_REDIS_REPLICA_ACKS_MIN: "17" })).toThrow(ConfigError);
    expect(() => loadDirectoryConfig({ DIRECTORY_REDIS_REPLICA_WAIT_MS: "0" })).toThrow(ConfigError);
  });

  it("treats empty numeric variables as unset", () => {
    const { config } = loadDirectoryConfig({ DIRECTORY_REQUESTS_IN_FLIGHT_MAX: "" });
    expect(config.requestsInFlightMax).toBe(directoryConfigDefaults.requestsInFlightMax);
  });

  it("reports unknown DIRECTORY_ variables as warnings, and no other prefix", () => {
    const { warnings } = loadDirectoryConfig({ DIRECTORY_REDIS_ULR: "redis://x", DIRECTORY_ZZZ: "1", EDGE_PORT: "1", CELLWIRE_OTHER: "x" });
    expect(warnings).toHaveLength(2);
    expect(warnings[0]).toContain("DIRECTORY_REDIS_ULR");
    expect(warnings[1]).toContain("DIRECTORY_ZZZ");
  });

  it.each([
    ["CELLWIRE_NAMESPACE", "Bad-Namespace"],
    ["CELLWIRE_NAMESPACE", "a".repeat(25)],
    ["CELLWIRE_NATS_SERVERS", " , "],
    ["CELLWIRE_NATS_SERVERS", "host with space:4222"],
    ["DIRECTORY_REDIS_URL", "http://127.0.0.1:6379"],
    ["DIRECTORY_REQUESTS_IN_FLIGHT_MAX", "0"],
    ["DIRECTORY_REQUESTS_IN_FLIGHT_MAX", "12abc"],
    ["DIRECTORY_REDIS_COMMAND_TIMEOUT_MS", "10"],
    ["DIRECTORY_REDIS_COMMAND_TIMEOUT_MS", "1.5"],
  ])("rejects %s=%j with a ConfigError naming it", (name, value) => {
    expect(() => loadDirectoryConfig({ [name]: value })).toThrow(ConfigError);
    expect(() => loadDirectoryConfig({ [name]: value })).toThrow(name);
  });
});

describe("redactRedisUrl", () => {
  it("hides a password and keeps the rest", () => {
    expect(redactRedisUrl("redis://:secret@10.0.0.5:6380/2")).toBe("redis://:***@10.0.0.5:6380/2");
    expect(redactRedisUrl("redis://127.0.0.1:6379")).toBe("redis://127.0.0.1:6379");
  });
});
