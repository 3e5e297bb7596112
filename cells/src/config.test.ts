import { describe, expect, it } from "vitest";
import { loadWorkerConfig } from "./config.ts";

const minimal = { WORKER_CELL_ID: "a", WORKER_ID: "a-1" };

describe("loadWorkerConfig", () => {
  it("fills defaults around the two required ids", () => {
    expect(loadWorkerConfig(minimal)).toEqual({
      config: {
        namespace: "cellwire",
        natsServers: ["127.0.0.1:4222"],
        cellId: "a",
        workerId: "a-1",
        postgresAdminUrl: "postgres://postgres@127.0.0.1:5432/postgres",
        leaseMs: 1500,
        heartbeatIntervalMs: 300,
        membershipBucketReplicas: 1,
        cellWeight: 100,
        poolSize: 10,
        directoryWaitMs: 15_000,
        pendingPerConversationMax: 256,
        pendingTotalMax: 10_000,
        outboxSweepIntervalMs: 1000,
        outboxRetryAfterMs: 2000,
        outboxBatchMax: 1000,
        outboxSweepPagesMax: 10,
        relayRecipientsConcurrencyMax: 32,
        relaysInFlightMax: 256,
        relayPendingMax: 10_000,
        relayCleanConversationsMax: 10_000,
        relayRequestTimeoutMs: 2000,
        relayAttemptsMax: 3,
        relayWatchedCellsMax: 100,
        relayStopWaitMs: 5000,
        homeCellCacheUsersMax: 100_000,
        homeCellCacheTtlMs: 60_000,
        migrationsInFlightMax: 16,
        migrationRequestTimeoutMs: 10_000,
      },
      unknownVariables: [],
    });
  });

  it("reads every variable and reports unknown WORKER_ ones", () => {
    const { config, unknownVariables } = loadWorkerConfig({
      ...minimal,
      CELLWIRE_NAMESPACE: "staging",
      CELLWIRE_NATS_SERVERS: "n1:4222, n2:4222,",
      CELLWIRE_SOMETHING_ELSE: "belongs to another service",
      WORKER_POSTGRES_ADMIN_URL: "postgresql://admin:secret@db:5433/postgres",
      WORKER_LEASE_MS: "5000",
      WORKER_HEARTBEAT_INTERVAL_MS: "2000",
      WORKER_KV_REPLICAS: "3",
      WORKER_CELL_WEIGHT: "7",
      WORKER_POOL_SIZE: "4",
      WORKER_DIRECTORY_WAIT_MS: "0",
      WORKER_PENDING_PER_CONVERSATION_MAX: "3",
      WORKER_PENDING_TOTAL_MAX: "30",
      WORKER_OUTBOX_SWEEP_INTERVAL_MS: "250",
      WORKER_OUTBOX_RETRY_AFTER_MS: "700",
      WORKER_OUTBOX_BATCH_MAX: "50",
      WORKER_OUTBOX_SWEEP_PAGES_MAX: "2",
      WORKER_RELAY_RECIPIENTS_CONCURRENCY_MAX: "4",
      WORKER_RELAYS_IN_FLIGHT_MAX: "8",
      WORKER_RELAY_PENDING_MAX: "16",
      WORKER_RELAY_CLEAN_CONVERSATIONS_MAX: "9",
      WORKER_RELAY_REQUEST_TIMEOUT_MS: "900",
      WORKER_RELAY_ATTEMPTS_MAX: "2",
      WORKER_RELAY_WATCHED_CELLS_MAX: "3",
      WORKER_RELAY_STOP_WAIT_MS: "100",
      WORKER_HOME_CELL_CACHE_USERS_MAX: "11",
      WORKER_HOME_CELL_CACHE_TTL_MS: "1234",
      WORKER_MIGRATIONS_IN_FLIGHT_MAX: "2",
      WORKER_MIGRATION_REQUEST_TIMEOUT_MS: "3000",
      WORKER_MEMBER_CACHE_CONVERSATIONS_MAX: "5",
      WORKER_LEASE_MSS: "typo",
    });
    expect(config).toMatchObject({
      namespace: "staging",
      natsServers: ["n1:4222", "n2:4222"],
      postgresAdminUrl: "postgresql://admin:secret@db:5433/postgres",
      leaseMs: 5000,
      heartbeatIntervalMs: 2000,
      membershipBucketReplicas: 3,
      cellWeight: 7,
      poolSize: 4,
      directoryWaitMs: 0,
      pendingPerConversationMax: 3,
      pendingTotalMax: 30,
      outboxSweepIntervalMs: 250,
      outboxRetryAfterMs: 700,
      outboxBatchMax: 50,
      outboxSweepPagesMax: 2,
      relayRecipientsConcurrencyMax: 4,
      relaysInFlightMax: 8,
      relayPendingMax: 16,
      relayCleanConversationsMax: 9,
      relayRequestTimeoutMs: 900,
      relayAttemptsMax: 2,
      relayWatchedCellsMax: 3,
      relayStopWaitMs: 100,
      homeCellCacheUsersMax: 11,
      homeCellCacheTtlMs: 1234,
      migrationsInFlightMax: 2,
      migrationRequestTimeoutMs: 3000,
    });
    // A setting of an earlier version (the member cache is gone) is reported like a typo.
    expect(unknownVariables).toEqual(["WORKER_LEASE_MSS", "WORKER_MEMBER_CACHE_CONVERSATIONS_MAX"]);
  });

  it.each([
    [{ WORKER_ID: "a-1" }, /WORKER_CELL_ID is required/],
    [{ WORKER_CELL_ID: "a" }, /WORKER_ID is required/],
    [{ ...minimal, WORKER_CELL_ID: "A.b" }, /WORKER_CELL_ID/],
    [{ ...minimal, WORKER_ID: "a.>" }, /WORKER_ID/],
    [{ ...minimal, CELLWIRE_NAMESPACE: "Prod" }, /CELLWIRE_NAMESPACE/],
    [{ ...minimal, WORKER_POOL_SIZE: "0" }, /WORKER_POOL_SIZE/],
    [{ ...minimal, WORKER_LEASE_MS: "3s" }, /WORKER_LEASE_MS/],
    [{ ...minimal, WORKER_KV_REPLICAS: "6" }, /WORKER_KV_REPLICAS/],
    [{ ...minimal, WORKER_HEARTBEAT_INTERVAL_MS: "2000" }, /at most half of WORKER_LEASE_MS/],
    [{ ...minimal, WORKER_POSTGRES_ADMIN_URL: "mysql://root@db/x" }, /WORKER_POSTGRES_ADMIN_URL/],
    [{ ...minimal, WORKER_POSTGRES_ADMIN_URL: "not a url" }, /WORKER_POSTGRES_ADMIN_URL/],
    [{ ...minimal, WORKER_PENDING_PER_CONVERSATION_MAX: "50", WORKER_PENDING_TOTAL_MAX: "10" }, /must not exceed/],
    [{ ...minimal, CELLWIRE_NATS_SERVERS: " , " }, /at least one server/],
    [{ ...minimal, WORKER_OUTBOX_BATCH_MAX: "0" }, /WORKER_OUTBOX_BATCH_MAX/],
    [{ ...minimal, WORKER_OUTBOX_SWEEP_INTERVAL_MS: "soon" }, /WORKER_OUTBOX_SWEEP_INTERVAL_MS/],
  ])("refuses %j", (environment, message) => {
    expect(() => loadWorkerConfig(environment)).toThrow(message);
  });
});
