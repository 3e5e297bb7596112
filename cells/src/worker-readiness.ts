// When a worker is ready (docs/decisions/0032): while it holds its lease (renewed in time, not given up
// for its database), its database answered lately, and its NATS connection is up. The database check
// reads the watchdog's probes (DatabaseWatchdog, one `select 1` per WORKER_POSTGRES_PROBE_INTERVAL_MS on
// a connection of its own) rather than querying per /readyz: a probe or a scrape costs Postgres nothing,
// and a silent database shows within a few probe intervals, long before the watchdog gives up the lease.
import type { ReadinessCheck } from "@cellwire/cluster";

export type WorkerReadinessSources = {
  /** False once the lease lapsed or was given up (WorkerOwnership.leaseHeld). */
  readonly leaseHeld: () => boolean;
  /** Since the start of the last probe the database answered (DatabaseWatchdog.answeredAgoMs). */
  readonly databaseAnsweredAgoMs: () => number;
  /** Older than this, the database counts as not answering. */
  readonly databaseAnswerAgeMsMax: number;
  readonly natsConnected: () => boolean;
};

/** Probes answered within three probe intervals (one slow probe is not an outage), and never under 1 s. */
export function databaseAnswerAgeMsMax(probeIntervalMs: number): number {
  return Math.max(1000, 3 * probeIntervalMs);
}

export function workerReadinessChecks(sources: WorkerReadinessSources): ReadinessCheck[] {
  return [
    {
      name: "lease",
      check: () => (sources.leaseHeld() ? { ok: true } : { ok: false, detail: "the worker does not hold its lease in the cell's ring" }),
    },
    {
      name: "database",
      check: () => {
        const agoMs = Math.round(sources.databaseAnsweredAgoMs());
        return agoMs <= sources.databaseAnswerAgeMsMax
          ? { ok: true, detail: `answered ${agoMs} ms ago` }
          : { ok: false, detail: `the cell database has answered no probe for ${agoMs} ms` };
      },
    },
    {
      name: "nats",
      check: () => (sources.natsConnected() ? { ok: true } : { ok: false, detail: "the NATS connection is down; reconnecting" }),
    },
  ];
}
