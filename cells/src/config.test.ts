import { describe, expect, it } from "vitest";
import { devDirectConversationKey } from "@cellwire/cluster";
import { loadWorkerConfig } from "./config.ts";
import { databaseUrl } from "./store/database.ts";

const minimal = { WORKER_CELL_ID: "a", WORKER_ID: "a-1" };

describe("loadWorkerConfig", () => {
  it("fills defaults around the two required ids", () => {
    expect(loadWorkerConfig(minimal)).toEqual({
      config: {
        namespace: "cellwire",
        natsServers: ["127.0.0.1:4222"],
        natsAccess: { service: "worker", inboxPrefix: "_INBOX.worker" },
        cellId: "a",
        workerId: "a-1",
        postgresAdminUrl: "postgres://postgres@127.0.0.1:5432/postgres",
        leaseMs: 1500,
        directConversationKey: devDirectConversationKey,
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
        frozenSweepIntervalMs: 5000,
        frozenSweepKeysMax: 100,
        frozenSweepResumesMax: 4,
        sendBatchMax: 512,
        sendsPendingMax: 4096,
        sendQueueWaitMsMax: 1000,
        memberCacheConversationsMax: 10_000,
        sendLingerMs: 3,
        sendBusyWindowMs: 20,
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
      CELLWIRE_DIRECT_CONVERSATION_KEY: "this deployment's own secret, 32 characters or more",
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
      WORKER_FROZEN_SWEEP_INTERVAL_MS: "750",
      WORKER_FROZEN_SWEEP_KEYS_MAX: "12",
      WORKER_FROZEN_SWEEP_RESUMES_MAX: "1",
      WORKER_SEND_BATCH_MAX: "64",
      WORKER_SENDS_PENDING_MAX: "128",
      WORKER_SEND_QUEUE_WAIT_MS_MAX: "250",
      WORKER_MEMBER_CACHE_CONVERSATIONS_MAX: "5",
      WORKER_SEND_LINGER_MS: "0",
      WORKER_SEND_BUSY_WINDOW_MS: "45",
      WORKER_SEND_BATCH_SIZE: "a name of no version",
      WORKER_LEASE_MSS: "typo",
    });
    expect(config).toMatchObject({
      namespace: "staging",
      natsServers: ["n1:4222", "n2:4222"],
      postgresAdminUrl: "postgresql://admin:secret@db:5433/postgres",
      leaseMs: 5000,
      directConversationKey: "this deployment's own secret, 32 characters or more",
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
      frozenSweepIntervalMs: 750,
      frozenSweepKeysMax: 12,
      frozenSweepResumesMax: 1,
      sendBatchMax: 64,
      sendsPendingMax: 128,
      sendQueueWaitMsMax: 250,
      memberCacheConversationsMax: 5,
      sendLingerMs: 0,
      sendBusyWindowMs: 45,
    });
    expect(unknownVariables).toEqual(["WORKER_LEASE_MSS", "WORKER_SEND_BATCH_SIZE"]);
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
    [{ ...minimal, WORKER_SEND_BATCH_MAX: "0" }, /WORKER_SEND_BATCH_MAX/],
    [{ ...minimal, WORKER_SEND_BATCH_MAX: "10001" }, /WORKER_SEND_BATCH_MAX/],
    [{ ...minimal, WORKER_SENDS_PENDING_MAX: "0" }, /WORKER_SENDS_PENDING_MAX/],
    [{ ...minimal, WORKER_SEND_QUEUE_WAIT_MS_MAX: "0" }, /WORKER_SEND_QUEUE_WAIT_MS_MAX/],
    [{ ...minimal, WORKER_MEMBER_CACHE_CONVERSATIONS_MAX: "none" }, /WORKER_MEMBER_CACHE_CONVERSATIONS_MAX/],
  ])("refuses %j", (environment, message) => {
    expect(() => loadWorkerConfig(environment)).toThrow(message);
  });
});

describe("Postgres over TLS", () => {
  it("keeps the TLS parameters of WORKER_POSTGRES_ADMIN_URL in each cell's database URL, where pg reads them", () => {
    const adminUrl = "postgres://cellwire@db.internal:5432/postgres?sslmode=verify-full&sslrootcert=/etc/cellwire/pg-ca.pem";
    expect(loadWorkerConfig({ ...minimal, WORKER_POSTGRES_ADMIN_URL: adminUrl }).config.postgresAdminUrl).toBe(adminUrl);
    const cellUrl = new URL(databaseUrl(adminUrl, "cellwire_cell_a"));
    expect(cellUrl.pathname).toBe("/cellwire_cell_a");
    expect(cellUrl.searchParams.get("sslmode")).toBe("verify-full");
    expect(cellUrl.searchParams.get("sslrootcert")).toBe("/etc/cellwire/pg-ca.pem");
  });
});
