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
        leaseMs: 3000,
        heartbeatIntervalMs: 1000,
        cellWeight: 100,
        poolSize: 10,
        directoryWaitMs: 15_000,
        pendingPerConversationMax: 256,
        pendingTotalMax: 10_000,
        memberCacheConversationsMax: 10_000,
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
      WORKER_CELL_WEIGHT: "7",
      WORKER_POOL_SIZE: "4",
      WORKER_DIRECTORY_WAIT_MS: "0",
      WORKER_PENDING_PER_CONVERSATION_MAX: "3",
      WORKER_PENDING_TOTAL_MAX: "30",
      WORKER_MEMBER_CACHE_CONVERSATIONS_MAX: "5",
      WORKER_LEASE_MSS: "typo",
    });
    expect(config).toMatchObject({
      namespace: "staging",
      natsServers: ["n1:4222", "n2:4222"],
      postgresAdminUrl: "postgresql://admin:secret@db:5433/postgres",
      leaseMs: 5000,
      heartbeatIntervalMs: 2000,
      cellWeight: 7,
      poolSize: 4,
      directoryWaitMs: 0,
      pendingPerConversationMax: 3,
      pendingTotalMax: 30,
      memberCacheConversationsMax: 5,
    });
    expect(unknownVariables).toEqual(["WORKER_LEASE_MSS"]);
  });

  it.each([
    [{ WORKER_ID: "a-1" }, /WORKER_CELL_ID is required/],
    [{ WORKER_CELL_ID: "a" }, /WORKER_ID is required/],
    [{ ...minimal, WORKER_CELL_ID: "A.b" }, /WORKER_CELL_ID/],
    [{ ...minimal, WORKER_ID: "a.>" }, /WORKER_ID/],
    [{ ...minimal, CELLWIRE_NAMESPACE: "Prod" }, /CELLWIRE_NAMESPACE/],
    [{ ...minimal, WORKER_POOL_SIZE: "0" }, /WORKER_POOL_SIZE/],
    [{ ...minimal, WORKER_LEASE_MS: "3s" }, /WORKER_LEASE_MS/],
    [{ ...minimal, WORKER_HEARTBEAT_INTERVAL_MS: "2000" }, /at most half of WORKER_LEASE_MS/],
    [{ ...minimal, WORKER_POSTGRES_ADMIN_URL: "mysql://root@db/x" }, /WORKER_POSTGRES_ADMIN_URL/],
    [{ ...minimal, WORKER_POSTGRES_ADMIN_URL: "not a url" }, /WORKER_POSTGRES_ADMIN_URL/],
    [{ ...minimal, WORKER_PENDING_PER_CONVERSATION_MAX: "50", WORKER_PENDING_TOTAL_MAX: "10" }, /must not exceed/],
    [{ ...minimal, CELLWIRE_NATS_SERVERS: " , " }, /at least one server/],
  ])("refuses %j", (environment, message) => {
    expect(() => loadWorkerConfig(environment)).toThrow(message);
  });
});
