// `cellwire migrate`, `cellwire drain` and `cellwire add-cell`: operator commands over NATS, with progress
// on stderr for the long ones and one JSON line (--json) or a sentence on stdout for the result.
import { connect, type NatsConnection } from "@nats-io/transport-node";
import {
  anonymousNatsAccess,
  CellwireError,
  decodeMessage,
  encodeJson,
  isNoResponders,
  isTimeout,
  natsConnectOptions,
  sleep,
  type NatsAccess,
} from "@cellwire/cluster";
import { isCellId, isConversationId, isUserId, topologyReply, topologySubject, type DirectoryEntryKind } from "@cellwire/protocol";
import { drainCell, MigrationError, migrateKey, migrationTools, type DrainReport } from "./migration.ts";
import { percentile } from "./statistics.ts";

export type OperatorOptions = {
  readonly natsServers: readonly string[];
  readonly natsAccess?: NatsAccess;
  readonly namespace: string;
  readonly json: boolean;
};

/** How long add-cell waits for the launcher to start the workers (each creates and migrates a database). */
const addCellStartTimeoutMs = 120_000;
/** How long add-cell then waits for the cell to be registered and its ring to hold every worker. */
const addCellReadyDeadlineMs = 30_000;
const addCellPollMs = 200;

/** Runs `work` on a connection as the admin user; an operating error is printed and exits 1. */
export async function withConnection(
  options: OperatorOptions,
  name: string,
  work: (connection: NatsConnection) => Promise<number>,
): Promise<number> {
  const connection = await connect({
    ...(await natsConnectOptions(options.natsAccess ?? anonymousNatsAccess("admin"))),
    servers: [...options.natsServers],
    name,
  });
  try {
    return await work(connection);
  } catch (error) {
    if (error instanceof CellwireError || error instanceof MigrationError) {
      process.stderr.write(`cellwire: ${error.message}\n`);
      return 1;
    }
    throw error;
  } finally {
    await connection.close();
  }
}

function fail(message: string): Promise<number> {
  process.stderr.write(`cellwire: ${message}\n`);
  return Promise.resolve(2);
}

/** Moves one user (mailbox) or conversation to `toCellId`, printing the pause its writes saw. */
export function runMigrate(id: string, toCellId: string, kind: DirectoryEntryKind, options: OperatorOptions): Promise<number> {
  if (kind === "user" ? !isUserId(id) : !isConversationId(id)) return fail(`${JSON.stringify(id)} is not a ${kind} id`);
  if (!isCellId(toCellId)) return fail(`${JSON.stringify(toCellId)} is not a cell id`);
  return withConnection(options, "cellwire-cli-migrate", async (connection) => {
    const tools = migrationTools(connection, options.namespace);
    try {
      const startedAtMs = performance.now();
      const result = await migrateKey(tools, kind, id, toCellId);
      const tookMs = Math.round(performance.now() - startedAtMs);
      if (options.json) {
        process.stdout.write(`${JSON.stringify({ ...result, tookMs })}\n`);
      } else if (result.alreadyMoved) {
        process.stdout.write(`${kind} ${id} already lives in cell ${toCellId} (entry epoch ${result.epoch})\n`);
      } else {
        process.stdout.write(
          `${kind} ${id} moved from cell ${result.fromCellId} to cell ${toCellId} (entry epoch ${result.epoch}): ` +
            `${result.copiedItems} ${kind === "user" ? "mailbox events" : "messages"} copied, writes paused ${result.pauseMs} ms, ${tookMs} ms in all\n`,
        );
      }
      return 0;
    } finally {
      tools.stop();
    }
  });
}

/** Moves everything out of a cell, printing progress each page; exit 0 once the cell homes nothing. */
export function runDrain(cellId: string, concurrency: number, options: OperatorOptions): Promise<number> {
  if (!isCellId(cellId)) return fail(`${JSON.stringify(cellId)} is not a cell id`);
  return withConnection(options, "cellwire-cli-drain", async (connection) => {
    const tools = migrationTools(connection, options.namespace);
    try {
      process.stderr.write(`draining cell ${cellId}: it takes no new users or conversations from now on\n`);
      let report: DrainReport;
      try {
        report = await drainCell(tools, cellId, {
          concurrency,
          onProgress: (progress) =>
            process.stderr.write(
              `drain ${cellId}: pass ${progress.pass}, ${progress.movedUsers} users and ${progress.movedConversations} conversations moved, ` +
                `${progress.failed} failed, ${(progress.elapsedMs / 1000).toFixed(1)} s\n`,
            ),
        });
      } catch (error) {
        if (error instanceof MigrationError) {
          process.stderr.write(`cellwire: drain of cell ${cellId} is not complete: ${error.message}\n`);
          return 1;
        }
        throw error;
      }
      const summary = {
        cellId,
        movedUsers: report.movedUsers,
        movedConversations: report.movedConversations,
        elapsedMs: Math.round(report.elapsedMs),
        pauseP50Ms: percentile(report.pausesMs, 50) ?? 0,
        pauseP99Ms: percentile(report.pausesMs, 99) ?? 0,
        pauseMaxMs: percentile(report.pausesMs, 100) ?? 0,
      };
      if (options.json) {
        process.stdout.write(`${JSON.stringify(summary)}\n`);
      } else {
        process.stdout.write(
          `cell ${cellId} drained in ${(summary.elapsedMs / 1000).toFixed(1)} s: ${summary.movedUsers} users and ${summary.movedConversations} conversations moved ` +
            `(write pauses p50 ${summary.pauseP50Ms} ms, p99 ${summary.pauseP99Ms} ms, max ${summary.pauseMaxMs} ms). ` +
            `It homes nothing and holds no pending relay: its workers can stop.\n`,
        );
      }
      return 0;
    } finally {
      tools.stop();
    }
  });
}

/**
 * Asks the local topology launcher to start `workers` workers of a new cell, then waits until the
 * directory lists the cell as active and its ring holds them all.
 */
export function runAddCell(cellId: string, workers: number, weight: number, options: OperatorOptions): Promise<number> {
  if (!isCellId(cellId)) return fail(`${JSON.stringify(cellId)} is not a cell id`);
  return withConnection(options, "cellwire-cli-add-cell", async (connection) => {
    const tools = migrationTools(connection, options.namespace);
    try {
      const existing = (await tools.directory.listCells()).find((cell) => cell.cellId === cellId);
      if (existing !== undefined) {
        process.stderr.write(`cellwire: cell ${cellId} is already registered (${existing.state}, weight ${existing.weight})\n`);
        return 1;
      }
      process.stderr.write(
        `asking the local topology to start ${workers} workers of cell ${cellId} (each creates and migrates the cell's database)…\n`,
      );
      let raw;
      try {
        raw = await connection.request(
          topologySubject(options.namespace),
          encodeJson({ type: "topology.addCell", cellId, workers, weight }),
          {
            timeout: addCellStartTimeoutMs,
          },
        );
      } catch (error) {
        if (isNoResponders(error) || isTimeout(error)) {
          process.stderr.write(
            `cellwire: no local topology of namespace ${options.namespace} answered. Start the cell's workers yourself ` +
              `(WORKER_CELL_ID=${cellId} WORKER_ID=${cellId}-1 WORKER_CELL_WEIGHT=${weight} npx tsx cells/src/main.ts, one per worker) and they register the cell.\n`,
          );
          return 1;
        }
        throw error;
      }
      const reply = decodeMessage(topologyReply, raw.data);
      if (!reply.ok) throw new MigrationError(`the launcher answered something that does not decode: ${reply.reason}`);
      if (reply.value.type === "topology.error") {
        process.stderr.write(`cellwire: the launcher could not start cell ${cellId}: ${reply.value.message}\n`);
        return 1;
      }
      const workerIds = reply.value.workerIds;
      process.stderr.write(`started ${workerIds.join(", ")}; waiting for the directory and the ring…\n`);
      const deadlineMs = performance.now() + addCellReadyDeadlineMs;
      for (;;) {
        const record = (await tools.directory.listCells()).find((cell) => cell.cellId === cellId);
        // The launcher answers once every worker is ready, which each is only after taking its lease.
        const live = record !== undefined && (await tools.router.hasLiveWorkers(cellId).catch(() => false));
        if (record !== undefined && record.state === "active" && live) {
          if (options.json) process.stdout.write(`${JSON.stringify({ cellId, weight: record.weight, state: record.state, workerIds })}\n`);
          else
            process.stdout.write(
              `cell ${cellId} is active with weight ${record.weight} and workers ${workerIds.join(", ")}; new users are placed on it by weight\n`,
            );
          return 0;
        }
        if (performance.now() > deadlineMs) {
          process.stderr.write(
            `cellwire: cell ${cellId} was not registered with ${workerIds.length} live workers within ${addCellReadyDeadlineMs} ms\n`,
          );
          return 1;
        }
        await sleep(addCellPollMs);
      }
    } finally {
      tools.stop();
    }
  });
}
