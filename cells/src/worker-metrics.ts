// A worker's Prometheus metrics (docs/decisions/0032): the counters and histograms the pure parts feed
// through small interfaces (each with a no-op for tests that do not care), and the gauges read at scrape
// time from what the worker already keeps (its ring, its lease, its pools, its NATS connection) or from
// one bounded query (the outbox). Every label value comes from a closed set: request kinds, reply codes,
// store methods, lease outcomes; never a user, a conversation or a message.
import {
  Counter,
  createCellRequestMetrics,
  createDirectoryRequestMetrics,
  Gauge,
  Histogram,
  internalLatencyBucketsSeconds,
  metricPrefix,
  PlainCounter,
  PlainHistogram,
  type CellRequestObserver,
  type CounterCell,
  type DirectoryCacheLookup,
  type DirectoryRequestObserver,
  type DirectoryRequestTiming,
  type HistogramCell,
  type Registry,
} from "@cellwire/cluster";
import { cellRequestTypes, expectedCellReplyType, type CellBatchReplies, type CellReply, type CellRequest } from "@cellwire/protocol";

/** What the send committer reports: the size of each batch it stores (one statement). */
export type SendCommitterMetrics = { readonly batchStarted: (sendCount: number) => void };

/** What the outbox relay reports, once per relay of a conversation's rows. */
export type OutboxRelayMetrics = {
  /** Rows applied at their recipients' mailboxes, and rows whose relay failed and will be tried again. */
  readonly relayed: (appendedCount: number, retriedCount: number) => void;
  /** Rows moved to the dead letters. */
  readonly deadLettered: (rowCount: number) => void;
};

/** What migration reports: each cell.migrate's answer (its outcome and, for a move, its pause). */
export type MigrationMetrics = { readonly migrationEnded: (reply: CellReply) => void };

export const noSendCommitterMetrics: SendCommitterMetrics = { batchStarted: () => {} };
export const noOutboxRelayMetrics: OutboxRelayMetrics = { relayed: () => {}, deadLettered: () => {} };
export const noMigrationMetrics: MigrationMetrics = { migrationEnded: () => {} };

/** One request's end, fed by the subscription that answered it. */
export type RequestMetrics = {
  /** `kind` is the request's `type` as received (unknown types count as "unknown"); `startedAtMs` from performance.now(). */
  readonly answered: (kind: unknown, reply: CellReply | CellBatchReplies, startedAtMs: number) => void;
};

/** The request types a worker serves, the one closed set of `kind` labels. */
const requestKinds: readonly CellRequest["type"][] = cellRequestTypes;
/** A batch of sends counts each send as a cell.send, a batch of pages each page as a cell.mailboxPage; its latency is the batch's. */
const sendBatchKind = "cell.sendBatch";
const mailboxPageBatchKind = "cell.mailboxPageBatch";
const unknownKind = "unknown";

/** The outcome label of a reply: "ok" for its request's success reply, else the error code or the reply type. */
export function replyOutcome(kind: string, reply: CellReply): string {
  if (reply.type === "cell.error") return reply.code;
  if (
    kind !== unknownKind &&
    kind !== sendBatchKind &&
    kind !== mailboxPageBatchKind &&
    reply.type === expectedCellReplyType(kind as CellRequest["type"])
  )
    return "ok";
  // cell.moved (the key lives in another cell now), or a migration's alreadyMoved: named, not "ok".
  return reply.type.startsWith("cell.") ? reply.type.slice("cell.".length) : reply.type;
}

/** `kind` label: the request type without its `cell.` prefix ("send", "appendMailbox"). */
function kindLabel(kind: string): string {
  return kind.startsWith("cell.") ? kind.slice("cell.".length) : kind;
}

type KindInstruments = {
  readonly label: string;
  readonly seconds: HistogramCell;
  /**
   * Outcome counts (PlainCounter cells: an increment per send costs no label hashing), bound on first use:
   * outcomes are reply codes, a closed set.
   */
  readonly outcomes: Map<string, CounterCell>;
};

export type WorkerCounters = {
  readonly requests: RequestMetrics;
  readonly sendCommitter: SendCommitterMetrics;
  readonly outboxRelay: OutboxRelayMetrics;
  readonly migration: MigrationMetrics;
  /** Statement latency by store method; timeStatements (timed-statements.ts) feeds it. */
  readonly statementSeconds: PlainHistogram;
  readonly ringChanged: () => void;
  readonly leaseRenewalEnded: (outcome: string) => void;
  readonly leaseExpired: () => void;
  /** The relay's home-cell cache (DirectoryCache's onLookup). */
  readonly directoryCacheLookup: (result: DirectoryCacheLookup) => void;
  /** The worker's requests to cells (the relay's mailbox appends, migration's import pages), by timedCellRequests. */
  readonly cellRequests: CellRequestObserver;
  /** The worker's directory requests, told by its DirectoryClients. */
  readonly directoryRequests: DirectoryRequestObserver;
};

/** The worker's counters and histograms, defined in `registry`. */
function defineWorkerInstruments(registry: Registry) {
  const name = (suffix: string): string => `${metricPrefix}worker_${suffix}`;
  const registers = [registry];
  const latencyBuckets = [...internalLatencyBucketsSeconds];
  return {
    requestSeconds: new PlainHistogram({
      name: name("request_seconds"),
      help: "From a request's arrival to its answer, by kind (a send batch is observed once, as sendBatch).",
      labelName: "kind",
      buckets: latencyBuckets,
      registry,
    }),
    sendBatchSize: new PlainHistogram({
      name: name("send_batch_size"),
      help: "Sends stored by one group-commit statement.",
      buckets: [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024],
      registry,
    }).cell(),
    relayRetries: new Counter({
      name: name("relay_retries_total"),
      help: "Outbox rows whose relay failed (tried again later).",
      registers,
    }),
    deadLetters: new Counter({ name: name("dead_letters_total"), help: "Outbox rows moved to the dead letters.", registers }),
    mailboxAppends: new Counter({
      name: name("mailbox_appends_total"),
      help: "Outbox rows the relay applied at their recipients' mailboxes (in any cell).",
      registers,
    }),
    migrations: new Counter({
      name: name("migrations_total"),
      help: "cell.migrate requests answered by this worker, by outcome (migrated, already_moved, or the error code).",
      labelNames: ["outcome"] as const,
      registers,
    }),
    migrationPauseSeconds: new Histogram({
      name: name("migration_pause_seconds"),
      help: "How long a moved key was frozen (writes answered `moving`).",
      buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
      registers,
    }),
    statementSeconds: new PlainHistogram({
      name: name("statement_seconds"),
      help: "Store calls (each one or a few statements in one transaction), by statement (the store method).",
      labelName: "statement",
      buckets: latencyBuckets,
      registry,
    }),
    ringChanges: new Counter({ name: name("ring_changes_total"), help: "New rings of the worker's cell this worker saw.", registers }),
    leaseRenewals: new Counter({
      name: name("lease_renewals_total"),
      help: "Heartbeat writes of this worker's lease, by outcome (renewed, failed).",
      labelNames: ["outcome"] as const,
      registers,
    }),
    leaseExpiries: new Counter({
      name: name("lease_expiries_total"),
      help: "Expired leases of the cell's workers this worker deleted (each expiry is counted by one worker).",
      registers,
    }),
  };
}

/** A child of `counter` per outcome, made on first use: outcomes are codes, a closed set. */
function outcomeChildren(counter: Counter<"outcome">): (outcome: string) => Counter.Internal {
  const children = new Map<string, Counter.Internal>();
  return (outcome) => {
    let child = children.get(outcome);
    if (child === undefined) {
      child = counter.labels(outcome);
      children.set(outcome, child);
    }
    return child;
  };
}

/** Request counts and latency, their children bound once per kind. */
function requestMetrics(registry: Registry, requestSeconds: PlainHistogram): RequestMetrics {
  const byKind = new Map<string, KindInstruments>();
  const requestsTotal = new PlainCounter({
    name: `${metricPrefix}worker_requests_total`,
    help: "Cell requests answered, by kind (request type) and outcome (ok, or the error code).",
    labelNames: ["kind", "outcome"],
    registry,
  });
  for (const kind of [...requestKinds, sendBatchKind, mailboxPageBatchKind, unknownKind]) {
    const label = kindLabel(kind);
    byKind.set(kind, { label, seconds: requestSeconds.cell(label), outcomes: new Map() });
  }
  const unknownInstruments = byKind.get(unknownKind) as KindInstruments;
  const sendInstruments = byKind.get("cell.send") as KindInstruments;
  const pageInstruments = byKind.get("cell.mailboxPage") as KindInstruments;
  const count = (instruments: KindInstruments, kind: string, reply: CellReply): void => {
    const outcome = replyOutcome(kind, reply);
    let counted = instruments.outcomes.get(outcome);
    if (counted === undefined) {
      counted = requestsTotal.cell(instruments.label, outcome);
      instruments.outcomes.set(outcome, counted);
    }
    counted.value += 1;
  };
  return {
    answered: (kind, reply, startedAtMs) => {
      const instruments = (typeof kind === "string" ? byKind.get(kind) : undefined) ?? unknownInstruments;
      const kindName = instruments === unknownInstruments ? unknownKind : (kind as string);
      instruments.seconds.observe((performance.now() - startedAtMs) / 1000);
      if (reply.type === "cell.sendBatchReplies") {
        for (const sendReply of reply.replies) count(sendInstruments, "cell.send", sendReply);
      } else if (reply.type === "cell.mailboxPageBatchReplies") {
        for (const pageReply of reply.replies) count(pageInstruments, "cell.mailboxPage", pageReply);
      } else {
        count(instruments, kindName, reply);
      }
    },
  };
}

/** The counters and histograms of a worker in `registry`, with their children bound once. */
export function createWorkerCounters(registry: Registry): WorkerCounters {
  const instruments = defineWorkerInstruments(registry);
  const migrationOutcome = outcomeChildren(instruments.migrations);
  const renewalOutcome = outcomeChildren(instruments.leaseRenewals);
  return {
    requests: requestMetrics(registry, instruments.requestSeconds),
    sendCommitter: { batchStarted: (sendCount) => instruments.sendBatchSize.observe(sendCount) },
    outboxRelay: {
      relayed: (appendedCount, retriedCount) => {
        if (appendedCount > 0) instruments.mailboxAppends.inc(appendedCount);
        if (retriedCount > 0) instruments.relayRetries.inc(retriedCount);
      },
      deadLettered: (rowCount) => {
        if (rowCount > 0) instruments.deadLetters.inc(rowCount);
      },
    },
    migration: {
      migrationEnded: (reply) => {
        const moved = reply.type === "cell.migrated";
        migrationOutcome(moved ? (reply.alreadyMoved ? "already_moved" : "migrated") : replyOutcome("cell.migrate", reply)).inc();
        if (moved && !reply.alreadyMoved) instruments.migrationPauseSeconds.observe(reply.pauseMs / 1000);
      },
    },
    statementSeconds: instruments.statementSeconds,
    ringChanged: () => instruments.ringChanges.inc(),
    leaseRenewalEnded: (outcome) => renewalOutcome(outcome).inc(),
    leaseExpired: () => instruments.leaseExpiries.inc(),
    directoryCacheLookup: directoryCacheLookups(registry),
    cellRequests: createCellRequestMetrics(registry, {
      durationName: `${metricPrefix}worker_cell_request_seconds`,
      durationHelp: "The worker's requests to cells over NATS (mailbox appends, import pages; retries on other owners included), by kind.",
      errorsName: `${metricPrefix}worker_cell_request_errors_total`,
      errorsHelp: "The worker's requests to cells that failed, by kind and error code.",
    }),
    directoryRequests: createDirectoryRequestMetrics(registry, "worker"),
  };
}

/** How the worker's DirectoryClients time their requests: into its counters, on its monotonic clock. */
export function directoryRequestTiming(counters: WorkerCounters, clock: { readonly monotonicNowMs: () => number }): DirectoryRequestTiming {
  return { observer: counters.directoryRequests, monotonicNowMs: () => clock.monotonicNowMs() };
}

/** The relay's home-cell cache lookups by result, one cell each bound now (a lookup per recipient relayed). */
function directoryCacheLookups(registry: Registry): (result: DirectoryCacheLookup) => void {
  const counter = new PlainCounter({
    name: `${metricPrefix}worker_directory_cache_lookups_total`,
    help: "Lookups of recipients' home cells in the relay's cache, by result (hit: held and fresh; miss: asked the directory).",
    labelNames: ["result"],
    registry,
  });
  const hit = counter.cell("hit");
  const miss = counter.cell("miss");
  return (result) => {
    (result === "hit" ? hit : miss).value++;
  };
}

/** What the gauges read at scrape time. */
export type WorkerGaugeSources = {
  readonly ringEpoch: () => number;
  readonly ringMembers: () => number;
  readonly ownsLease: () => boolean;
  readonly natsConnected: () => boolean;
  /** Connections of the worker's pools (summed). */
  readonly poolConnections: () => { readonly total: number; readonly idle: number; readonly waiting: number };
  /** The cell's outbox, from one bounded query; rejects when the database did not answer in time. */
  readonly outbox: () => Promise<{ readonly depth: number; readonly oldestAgeSeconds: number }>;
};

/** The gauges of a worker, each reading its source when scraped. */
export function registerWorkerGauges(registry: Registry, sources: WorkerGaugeSources): void {
  const prefix = `${metricPrefix}worker_`;
  new Gauge({
    name: `${prefix}ring_epoch`,
    help: "The epoch of the cell's ring as this worker sees it.",
    registers: [registry],
    collect() {
      this.set(sources.ringEpoch());
    },
  });
  new Gauge({
    name: `${prefix}ring_members`,
    help: "Workers on the cell's ring as this worker sees it.",
    registers: [registry],
    collect() {
      this.set(sources.ringMembers());
    },
  });
  new Gauge({
    name: `${prefix}owns_lease`,
    help: "1 while this worker holds its lease (renewed in time, its database answering), else 0.",
    registers: [registry],
    collect() {
      this.set(sources.ownsLease() ? 1 : 0);
    },
  });
  new Gauge({
    name: `${prefix}nats_connected`,
    help: "1 while the worker's NATS connection is up, else 0.",
    registers: [registry],
    collect() {
      this.set(sources.natsConnected() ? 1 : 0);
    },
  });
  new Gauge({
    name: `${prefix}pg_pool_connections`,
    help: "The worker's Postgres connections, by state: total (open), idle, waiting (callers queued for one).",
    labelNames: ["state"] as const,
    registers: [registry],
    collect() {
      const { total, idle, waiting } = sources.poolConnections();
      this.labels("total").set(total);
      this.labels("idle").set(idle);
      this.labels("waiting").set(waiting);
    },
  });
  // Both outbox gauges come from one query per scrape: the first to collect starts it, the other shares it.
  let sample: Promise<{ readonly depth: number; readonly oldestAgeSeconds: number } | undefined> | undefined;
  const outboxSample = (): Promise<{ readonly depth: number; readonly oldestAgeSeconds: number } | undefined> => {
    sample ??= sources.outbox().then(
      (value) => value,
      () => undefined,
    );
    const current = sample;
    void current.finally(() => {
      if (sample === current) sample = undefined;
    });
    return current;
  };
  new Gauge({
    name: `${prefix}outbox_depth`,
    help: `Rows in the cell's outbox (every worker of the cell reports the same table; counted up to ${outboxDepthCountMax}). NaN when the database did not answer.`,
    registers: [registry],
    async collect() {
      this.set((await outboxSample())?.depth ?? Number.NaN);
    },
  });
  new Gauge({
    name: `${prefix}outbox_oldest_age_seconds`,
    help: "Age of the cell's oldest outbox row (0 when empty). NaN when the database did not answer.",
    registers: [registry],
    async collect() {
      this.set((await outboxSample())?.oldestAgeSeconds ?? Number.NaN);
    },
  });
}

/** The outbox depth query counts at most this many rows, so a scrape costs a bounded read however deep it is. */
export const outboxDepthCountMax = 100_000;
/** A scrape waits this long for the outbox query (a client-side timeout; the server's statement timeout applies too). */
export const outboxQueryTimeoutMs = 1000;

/** One statement: the rows up to the cap, and the age of the oldest (ids grow with time: the lowest id is the oldest). */
export const outboxSampleSql = `select
  (select count(*) from (select 1 from outbox limit ${outboxDepthCountMax}) as capped)::integer as depth,
  coalesce(extract(epoch from now() - (select created_at from outbox order by id limit 1)), 0)::double precision as oldest_age_seconds`;

/** Parses the row of outboxSampleSql (a Postgres row is unknown until checked). */
export function outboxSampleFromRow(row: unknown): { readonly depth: number; readonly oldestAgeSeconds: number } {
  if (typeof row !== "object" || row === null) throw new TypeError("the outbox sample returned no row");
  const { depth, oldest_age_seconds: oldestAgeSeconds } = row as Record<string, unknown>;
  const number = (value: unknown, name: string): number => {
    const parsed = typeof value === "string" ? Number(value) : value;
    if (typeof parsed !== "number" || !Number.isFinite(parsed) || parsed < 0)
      throw new TypeError(`the outbox sample's ${name} is not a number`);
    return parsed;
  };
  return { depth: number(depth, "depth"), oldestAgeSeconds: number(oldestAgeSeconds, "oldest_age_seconds") };
}
