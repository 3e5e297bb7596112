import { describe, expect, it } from "vitest";
import { readinessReport, Registry } from "@cellwire/cluster";
import { parsePrometheusText } from "@cellwire/testkit";
import type { CellReply } from "@cellwire/protocol";
import { timeStatements } from "./timed-statements.ts";
import {
  createWorkerCounters,
  outboxSampleFromRow,
  registerWorkerGauges,
  replyOutcome,
  type WorkerGaugeSources,
} from "./worker-metrics.ts";
import { databaseAnswerAgeMsMax, workerReadinessChecks } from "./worker-readiness.ts";

const stored: CellReply = {
  type: "cell.stored",
  conversationId: "c",
  seq: 1,
  clientMessageId: "m",
  sentAtMs: 0,
} as unknown as CellReply;
const overloaded: CellReply = { type: "cell.error", code: "overloaded", message: "busy" };

async function scrape(registry: Registry) {
  return parsePrometheusText(await registry.metrics());
}

describe("worker counters", () => {
  it("counts requests by kind and outcome (each send of a batch as a send), and times them by kind", async () => {
    const registry = new Registry();
    const counters = createWorkerCounters(registry);
    const startedAtMs = performance.now();
    counters.requests.answered("cell.sendBatch", { type: "cell.sendBatchReplies", replies: [stored, stored, overloaded] }, startedAtMs);
    counters.requests.answered(
      "cell.members",
      { type: "cell.members", conversationId: "c", members: [] } as unknown as CellReply,
      startedAtMs,
    );
    counters.requests.answered("cell.members", { type: "cell.error", code: "not_owner", message: "x" }, startedAtMs);
    // A type nobody serves is one label, not one per string a client sends.
    counters.requests.answered("cell.whatever-a-client-made-up", { type: "cell.error", code: "invalid_field", message: "x" }, startedAtMs);
    const result = await scrape(registry);
    expect(result.sum("cellwire_worker_requests_total", { kind: "send", outcome: "ok" })).toBe(2);
    expect(result.sum("cellwire_worker_requests_total", { kind: "send", outcome: "overloaded" })).toBe(1);
    expect(result.sum("cellwire_worker_requests_total", { kind: "members", outcome: "ok" })).toBe(1);
    expect(result.sum("cellwire_worker_requests_total", { kind: "members", outcome: "not_owner" })).toBe(1);
    expect(result.sum("cellwire_worker_requests_total", { kind: "unknown", outcome: "invalid_field" })).toBe(1);
    expect(result.sum("cellwire_worker_request_seconds_count", { kind: "sendBatch" })).toBe(1);
    expect(result.sum("cellwire_worker_request_seconds_count", { kind: "members" })).toBe(2);
    expect(result.types.get("cellwire_worker_request_seconds")).toBe("histogram");
  });

  it("counts each page of a mailbox page batch as a mailboxPage, and times the batch once", async () => {
    const registry = new Registry();
    const counters = createWorkerCounters(registry);
    const page: CellReply = { type: "cell.mailboxEvents", userId: "alice", events: [], headSeq: 0, floorSeq: 0 };
    const notOwner: CellReply = { type: "cell.error", code: "not_owner", message: "x" };
    counters.requests.answered(
      "cell.mailboxPageBatch",
      { type: "cell.mailboxPageBatchReplies", replies: [page, notOwner, page] },
      performance.now(),
    );
    const result = await scrape(registry);
    expect(result.sum("cellwire_worker_requests_total", { kind: "mailboxPage", outcome: "ok" })).toBe(2);
    expect(result.sum("cellwire_worker_requests_total", { kind: "mailboxPage", outcome: "not_owner" })).toBe(1);
    expect(result.sum("cellwire_worker_request_seconds_count", { kind: "mailboxPageBatch" })).toBe(1);
  });

  it("counts batches, relays, dead letters, migrations with their pauses, ring changes, lease events and home-cell cache lookups", async () => {
    const registry = new Registry();
    const counters = createWorkerCounters(registry);
    counters.sendCommitter.batchStarted(3);
    counters.sendCommitter.batchStarted(40);
    counters.outboxRelay.relayed(5, 2);
    counters.outboxRelay.deadLettered(3);
    counters.migration.migrationEnded({
      type: "cell.migrated",
      kind: "user",
      id: "u",
      fromCellId: "a",
      toCellId: "b",
      epoch: 2,
      pauseMs: 120,
      copiedItems: 4,
      alreadyMoved: false,
    });
    counters.migration.migrationEnded({ type: "cell.error", code: "moving", message: "x" });
    counters.ringChanged();
    counters.leaseRenewalEnded("renewed");
    counters.leaseRenewalEnded("failed");
    counters.leaseExpired();
    counters.directoryCacheLookup("hit");
    counters.directoryCacheLookup("hit");
    counters.directoryCacheLookup("miss");
    const result = await scrape(registry);
    expect(result.sum("cellwire_worker_send_batch_size_count")).toBe(2);
    expect(result.sum("cellwire_worker_send_batch_size_sum")).toBe(43);
    expect(result.sum("cellwire_worker_mailbox_appends_total")).toBe(5);
    expect(result.sum("cellwire_worker_relay_retries_total")).toBe(2);
    expect(result.sum("cellwire_worker_dead_letters_total")).toBe(3);
    expect(result.sum("cellwire_worker_migrations_total", { outcome: "migrated" })).toBe(1);
    expect(result.sum("cellwire_worker_migrations_total", { outcome: "moving" })).toBe(1);
    expect(result.sum("cellwire_worker_migration_pause_seconds_sum")).toBeCloseTo(0.12);
    expect(result.sum("cellwire_worker_ring_changes_total")).toBe(1);
    expect(result.sum("cellwire_worker_lease_renewals_total", { outcome: "renewed" })).toBe(1);
    expect(result.sum("cellwire_worker_lease_renewals_total", { outcome: "failed" })).toBe(1);
    expect(result.sum("cellwire_worker_lease_expiries_total")).toBe(1);
    expect(result.sum("cellwire_worker_directory_cache_lookups_total", { result: "hit" })).toBe(2);
    expect(result.sum("cellwire_worker_directory_cache_lookups_total", { result: "miss" })).toBe(1);
  });

  it("times the worker's requests to cells and to the directory, and counts their failures", async () => {
    const registry = new Registry();
    const counters = createWorkerCounters(registry);
    counters.cellRequests.requestEnded("cell.appendMailbox", 4, undefined);
    counters.cellRequests.requestEnded("cell.appendMailbox", 1500, "cell_unavailable");
    counters.cellRequests.requestEnded("cell.import", 30, undefined);
    counters.directoryRequests.requestEnded("directory.resolveUser", 2, false);
    counters.directoryRequests.requestEnded("directory.moveEntry", 2000, true);
    const result = await scrape(registry);
    expect(result.sum("cellwire_worker_cell_request_seconds_count", { kind: "cell.appendMailbox" })).toBe(2);
    expect(result.sum("cellwire_worker_cell_request_seconds_count", { kind: "cell.import" })).toBe(1);
    expect(result.sum("cellwire_worker_cell_request_errors_total", { kind: "cell.appendMailbox", code: "cell_unavailable" })).toBe(1);
    expect(result.sum("cellwire_worker_cell_request_errors_total")).toBe(1);
    expect(result.sum("cellwire_worker_directory_request_seconds_count", { operation: "resolveUser" })).toBe(1);
    expect(result.sum("cellwire_worker_directory_request_errors_total", { operation: "moveEntry" })).toBe(1);
    expect(result.sum("cellwire_worker_directory_request_errors_total")).toBe(1);
    expect(result.types.get("cellwire_worker_cell_request_seconds")).toBe("histogram");
    expect(result.types.get("cellwire_worker_directory_request_seconds")).toBe("histogram");
  });

  it("names a success ok, an error by its code and another reply by its type", () => {
    expect(replyOutcome("cell.send", stored)).toBe("ok");
    expect(replyOutcome("cell.send", overloaded)).toBe("overloaded");
    expect(replyOutcome("cell.send", { type: "cell.moved", kind: "user", id: "u", cellId: "b", epoch: 2 })).toBe("moved");
  });
});

describe("worker gauges", () => {
  const sources = (outbox: WorkerGaugeSources["outbox"]): WorkerGaugeSources => ({
    ringEpoch: () => 42,
    ringMembers: () => 3,
    ownsLease: () => true,
    natsConnected: () => false,
    poolConnections: () => ({ total: 5, idle: 2, waiting: 1 }),
    outbox,
  });

  it("reads their sources at scrape time, the outbox with one query for both of its gauges", async () => {
    const registry = new Registry();
    let queries = 0;
    registerWorkerGauges(
      registry,
      sources(async () => {
        queries++;
        return { depth: 7, oldestAgeSeconds: 2.5 };
      }),
    );
    const result = await scrape(registry);
    expect(result.sum("cellwire_worker_ring_epoch")).toBe(42);
    expect(result.sum("cellwire_worker_ring_members")).toBe(3);
    expect(result.sum("cellwire_worker_owns_lease")).toBe(1);
    expect(result.sum("cellwire_worker_nats_connected")).toBe(0);
    expect(result.sum("cellwire_worker_pg_pool_connections", { state: "total" })).toBe(5);
    expect(result.sum("cellwire_worker_pg_pool_connections", { state: "idle" })).toBe(2);
    expect(result.sum("cellwire_worker_pg_pool_connections", { state: "waiting" })).toBe(1);
    expect(result.sum("cellwire_worker_outbox_depth")).toBe(7);
    expect(result.sum("cellwire_worker_outbox_oldest_age_seconds")).toBe(2.5);
    expect(queries).toBe(1);
  });

  it("shows NaN for the outbox when the database does not answer, and the scrape still succeeds", async () => {
    const registry = new Registry();
    registerWorkerGauges(
      registry,
      sources(() => Promise.reject(new Error("Query read timeout"))),
    );
    const result = await scrape(registry);
    expect(result.find("cellwire_worker_outbox_depth")[0]?.value).toBeNaN();
    expect(result.sum("cellwire_worker_ring_epoch")).toBe(42);
  });

  it("parses the outbox row as Postgres returns it, and refuses a row that is not one", () => {
    expect(outboxSampleFromRow({ depth: 3, oldest_age_seconds: "1.5" })).toEqual({ depth: 3, oldestAgeSeconds: 1.5 });
    expect(() => outboxSampleFromRow(undefined)).toThrow(TypeError);
    expect(() => outboxSampleFromRow({ depth: "many", oldest_age_seconds: 0 })).toThrow(TypeError);
  });
});

describe("timeStatements", () => {
  class FakeStore {
    calls = 0;
    async appendMessages(count: number): Promise<number> {
      this.calls++;
      return count * 2;
    }
    async freeze(): Promise<void> {
      throw new Error("fenced");
    }
  }

  it("times each store method under its snake_case name, failures included, and keeps results and state", async () => {
    const registry = new Registry();
    const counters = createWorkerCounters(registry);
    const store = new FakeStore();
    const timed = timeStatements(store, counters.statementSeconds);
    expect(await timed.appendMessages(2)).toBe(4);
    await expect(timed.freeze()).rejects.toThrow("fenced");
    expect(timed.calls).toBe(1);
    const result = await scrape(registry);
    expect(result.sum("cellwire_worker_statement_seconds_count", { statement: "append_messages" })).toBe(1);
    expect(result.sum("cellwire_worker_statement_seconds_count", { statement: "freeze" })).toBe(1);
  });
});

describe("worker readiness", () => {
  const healthy = { leaseHeld: () => true, databaseAnsweredAgoMs: () => 200, databaseAnswerAgeMsMax: 3000, natsConnected: () => true };

  it("is ready with its lease, a database that answered lately and NATS", async () => {
    expect((await readinessReport(workerReadinessChecks(healthy))).ready).toBe(true);
  });

  it.each([
    ["lease", { leaseHeld: () => false }],
    ["database", { databaseAnsweredAgoMs: () => 3001 }],
    ["nats", { natsConnected: () => false }],
  ])("is not ready without its %s, and names it", async (name, broken) => {
    const report = await readinessReport(workerReadinessChecks({ ...healthy, ...broken }));
    expect(report.ready).toBe(false);
    expect(
      Object.entries(report.checks)
        .filter(([, check]) => !check.ok)
        .map(([failing]) => failing),
    ).toEqual([name]);
  });

  it("allows three probe intervals for the database's answer, at least a second", () => {
    expect(databaseAnswerAgeMsMax(1000)).toBe(3000);
    expect(databaseAnswerAgeMsMax(100)).toBe(1000);
  });
});
