// The worker's place in its cell's ring: the lease it holds (renewed at once after a NATS outage) and the
// watchdog that gives the lease up while the cell's database does not answer (docs/decisions/0025).
import { LeaseHolder, type LeaseBucket } from "@cellwire/cluster";
import type { WorkerLease } from "@cellwire/protocol";
import { postgresProbeIntervalMsDefault } from "./config.ts";
import { DatabaseWatchdog } from "./database-watchdog.ts";
import type { CellPools, WorkerContext } from "./worker-parts.ts";

/** Takes this worker's lease in the cell's ring; from then on ownership counts it. */
export async function takeLease(context: WorkerContext, bucket: LeaseBucket, subject: string): Promise<LeaseHolder> {
  const { config, dependencies, logger, connection, ownership } = context;
  const { clock } = dependencies;
  const lease: WorkerLease = {
    workerId: config.workerId,
    cellId: config.cellId,
    subject,
    startedAtMs: clock.wallNowMs(),
    leaseMs: config.leaseMs,
  };
  const holder = new LeaseHolder(bucket, lease, config.heartbeatIntervalMs, clock, logger, context.metrics.leaseRenewalEnded);
  await holder.start();
  ownership.leaseTakenBy(holder);
  // After a NATS outage the lease has most likely lapsed: renewed at once, the worker serves again as
  // soon as NATS does (docs/decisions/0025). The loop ends when the connection closes.
  void (async () => {
    for await (const status of connection.status()) if (status.type === "reconnect") holder.connectionRestored();
  })();
  return holder;
}

/** Gives up the lease while the cell's database does not answer, and takes it again once it does. */
export function startDatabaseWatchdog(context: WorkerContext, pools: CellPools, holder: LeaseHolder): DatabaseWatchdog {
  const { config, dependencies, logger, ownership } = context;
  const watchdog = new DatabaseWatchdog({
    probe: async () => void (await pools.probePool.query("select 1")),
    giveUpLease: () => holder.stop(),
    rejoin: () => holder.start(),
    monotonicNowMs: () => dependencies.clock.monotonicNowMs(),
    setInterval: (ms, callback) => {
      const timer = setInterval(callback, ms);
      return () => clearInterval(timer);
    },
    logger,
    limits: { unreachableMs: pools.unreachableMs, probeIntervalMs: config.postgresProbeIntervalMs ?? postgresProbeIntervalMsDefault },
  });
  ownership.databaseWatchedBy(watchdog);
  watchdog.start();
  context.undo.push(() => watchdog.stop());
  return watchdog;
}
