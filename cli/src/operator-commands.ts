// `cellwire ring`, `cells`, `whereis`, `migrate`, `drain`, `add-cell`, `revoke` and `dead-letters`: each
// asks an Operations (over NATS, or over the admin HTTP API with --admin-url) and prints its report: one
// JSON line (--json) or sentences and a table on stdout, progress of the long ones on stderr. The output is
// the same whichever operator answered.
import { isCellId, type DirectoryEntryKind } from "@cellwire/protocol";
import { OperationError, type Operations, type OperationsSession } from "./operations.ts";

export type OperationsTarget = {
  readonly json: boolean;
  /** Opens the operations for one command; `name` is how its connection is named to NATS. */
  readonly open: (name: string) => Promise<OperationsSession>;
};

/** Runs `work` on the operations; an operation error is printed and exits 2 (bad input) or 1. */
async function withOperations(target: OperationsTarget, name: string, work: (operations: Operations) => Promise<number>): Promise<number> {
  const session = await target.open(name);
  try {
    return await work(session.operations);
  } catch (error) {
    if (!(error instanceof OperationError)) throw error;
    process.stderr.write(`cellwire: ${error.message}\n`);
    return error.code === "invalid_input" ? 2 : 1;
  } finally {
    await session.close();
  }
}

const write = (text: string): void => void process.stdout.write(text);

/** The members of a cell, the age of each lease and each member's share of the ring's key space. */
export function runRing(cellId: string, target: OperationsTarget): Promise<number> {
  return withOperations(target, "cellwire-cli-ring", async (operations) => {
    const report = await operations.ring(cellId);
    if (target.json) {
      write(`${JSON.stringify({ cellId: report.cellId, namespace: report.namespace, members: report.members })}\n`);
      return 0;
    }
    const live = report.members.filter((member) => member.live).length;
    write(`cell ${report.cellId} (namespace ${report.namespace}): ${live} live of ${report.members.length} leases\n`);
    write(`${"worker".padEnd(16)}${"lease age".padStart(12)}${"lease".padStart(10)}${"share".padStart(10)}  state\n`);
    for (const member of report.members) {
      write(
        `${member.workerId.padEnd(16)}${`${member.leaseAgeMs} ms`.padStart(12)}${`${member.leaseMs} ms`.padStart(10)}${`${(member.share * 100).toFixed(1)}%`.padStart(10)}  ${member.live ? "live" : "expired"}\n`,
      );
    }
    return 0;
  });
}

/** Lists the registered cells with their weight and state. */
export function runCells(target: OperationsTarget): Promise<number> {
  return withOperations(target, "cellwire-cli", async (operations) => {
    const { namespace, cells } = await operations.cells();
    if (target.json) {
      write(`${JSON.stringify({ namespace, cells })}\n`);
      return 0;
    }
    const total = cells.reduce((sum, cell) => sum + cell.weight, 0);
    write(`${cells.length} cells in namespace ${namespace}\n${"cell".padEnd(10)}${"weight".padStart(8)}${"share".padStart(9)}  state\n`);
    for (const cell of cells) {
      const share = total === 0 ? 0 : (cell.weight / total) * 100;
      write(`${cell.cellId.padEnd(10)}${String(cell.weight).padStart(8)}${`${share.toFixed(1)}%`.padStart(9)}  ${cell.state}\n`);
    }
    return 0;
  });
}

/** Shows a user's home cell and entry epoch; exit 1 for a user the directory has never placed. */
export function runWhereis(userId: string, target: OperationsTarget): Promise<number> {
  return withOperations(target, "cellwire-cli", async (operations) => {
    const report = await operations.whereis(userId);
    if (!report.placed) {
      if (target.json) write(`${JSON.stringify({ userId: report.userId, placed: false })}\n`);
      else process.stderr.write(`cellwire: ${report.userId} has no home cell yet (placed at first connection)\n`);
      return 1;
    }
    if (target.json) write(`${JSON.stringify({ userId: report.userId, placed: true, cellId: report.cellId, epoch: report.epoch })}\n`);
    else write(`${report.userId} lives in cell ${report.cellId} (entry epoch ${report.epoch})\n`);
    return 0;
  });
}

/** Moves one user (mailbox) or conversation to `toCellId`, printing the pause its writes saw. */
export function runMigrate(id: string, toCellId: string, kind: DirectoryEntryKind, target: OperationsTarget): Promise<number> {
  return withOperations(target, "cellwire-cli-migrate", async (operations) => {
    const result = await operations.migrate(kind, id, toCellId);
    if (target.json) {
      write(`${JSON.stringify(result)}\n`);
    } else if (result.alreadyMoved) {
      write(`${kind} ${id} already lives in cell ${toCellId} (entry epoch ${result.epoch})\n`);
    } else {
      write(
        `${kind} ${id} moved from cell ${result.fromCellId} to cell ${toCellId} (entry epoch ${result.epoch}): ` +
          `${result.copiedItems} ${kind === "user" ? "mailbox events" : "messages"} copied, writes paused ${result.pauseMs} ms, ${result.tookMs} ms in all\n`,
      );
    }
    return 0;
  });
}

/** Moves everything out of a cell, printing progress each page; exit 0 once the cell homes nothing. */
export function runDrain(cellId: string, concurrency: number, target: OperationsTarget): Promise<number> {
  return withOperations(target, "cellwire-cli-drain", async (operations) => {
    // A malformed id is refused without a word of draining; a valid one is announced as the drain starts.
    if (isCellId(cellId)) process.stderr.write(`draining cell ${cellId}: it takes no new users or conversations from now on\n`);
    const summary = await operations.drain(cellId, concurrency, (progress) => {
      process.stderr.write(
        `drain ${cellId}: pass ${progress.pass}, ${progress.movedUsers} users and ${progress.movedConversations} conversations moved, ` +
          `${progress.failed} failed, ${(progress.elapsedMs / 1000).toFixed(1)} s\n`,
      );
    });
    if (target.json) {
      write(`${JSON.stringify(summary)}\n`);
    } else {
      write(
        `cell ${cellId} drained in ${(summary.elapsedMs / 1000).toFixed(1)} s: ${summary.movedUsers} users and ${summary.movedConversations} conversations moved ` +
          `(write pauses p50 ${summary.pauseP50Ms} ms, p99 ${summary.pauseP99Ms} ms, max ${summary.pauseMaxMs} ms). ` +
          `It homes nothing and holds no pending relay: its workers can stop.\n`,
      );
    }
    return 0;
  });
}

/**
 * Asks the local topology launcher to start `workers` workers of a new cell, then waits until the
 * directory lists the cell as active and its ring holds them all.
 */
export function runAddCell(cellId: string, workers: number, weight: number, target: OperationsTarget): Promise<number> {
  return withOperations(target, "cellwire-cli-add-cell", async (operations) => {
    const report = await operations.addCell(cellId, workers, weight, (progress) => {
      if (progress.stage === "starting")
        process.stderr.write(
          `asking the local topology to start ${workers} workers of cell ${cellId} (each creates and migrates the cell's database)…\n`,
        );
      else process.stderr.write(`started ${progress.workerIds.join(", ")}; waiting for the directory and the ring…\n`);
    });
    if (target.json)
      write(`${JSON.stringify({ cellId: report.cellId, weight: report.weight, state: report.state, workerIds: report.workerIds })}\n`);
    else
      write(
        `cell ${cellId} is active with weight ${report.weight} and workers ${report.workerIds.join(", ")}; new users are placed on it by weight\n`,
      );
    return 0;
  });
}

/** Closes every session of a user on every edge (4103) and refuses their tokens issued until now. */
export function runRevoke(userId: string, target: OperationsTarget): Promise<number> {
  return withOperations(target, "cellwire-cli-revoke", async (operations) => {
    const { revokedAtMs } = await operations.revoke(userId);
    if (target.json) write(`${JSON.stringify({ userId, revokedAtMs })}\n`);
    else
      write(
        `revoked the sessions of ${userId} on every connected edge; their tokens issued before ${new Date(revokedAtMs).toISOString()} are refused\n`,
      );
    return 0;
  });
}

/** Lists the dead letters of one cell, or of every registered cell; exit 1 when a cell could not be read. */
export function runDeadLettersList(cellId: string | undefined, rowsMax: number, target: OperationsTarget): Promise<number> {
  return withOperations(target, "cellwire-cli-dead-letters", async (operations) => {
    const report = await operations.deadLetters(cellId, rowsMax);
    for (const problem of report.problems)
      process.stderr.write(`cellwire: the dead letters of cell ${problem.cellId} could not be read: ${problem.message}\n`);
    const { namespace, deadLetters: rows, truncatedCellIds, unreachableCellIds, cellIds } = report;
    if (target.json) {
      write(`${JSON.stringify({ namespace, deadLetters: rows, truncatedCellIds, unreachableCellIds })}\n`);
    } else {
      write(
        `${rows.length} dead letters in ${cellIds.length === 1 ? `cell ${cellIds[0]}` : `${cellIds.length} cells`} of namespace ${namespace}\n`,
      );
      if (rows.length > 0) {
        write(
          `${"cell".padEnd(8)}${"id".padStart(10)}  ${"recipient".padEnd(20)}${"attempts".padStart(9)}  ${"dead since".padEnd(25)}conversation / event: last error\n`,
        );
      }
      for (const row of rows) {
        write(
          `${row.cellId.padEnd(8)}${String(row.id).padStart(10)}  ${row.recipientUserId.padEnd(20)}${String(row.attempts).padStart(9)}  ` +
            `${new Date(row.deadLetteredAtMs).toISOString().padEnd(25)}${row.conversationId} / ${row.eventId}: ${row.lastError}\n`,
        );
      }
      for (const id of truncatedCellIds) write(`cell ${id} has more than ${rowsMax} dead letters (--limit)\n`);
    }
    return unreachableCellIds.length > 0 ? 1 : 0;
  });
}

/** Moves dead letters of `cellId` back to its outbox, to be relayed again. */
export function runDeadLettersRedrive(cellId: string, selection: readonly number[] | "all", target: OperationsTarget): Promise<number> {
  return withOperations(target, "cellwire-cli-dead-letters", async (operations) => {
    const { redrivenRows } = await operations.redrive(cellId, selection);
    if (target.json) write(`${JSON.stringify({ cellId, redrivenRows })}\n`);
    else write(`${redrivenRows} dead letters of cell ${cellId} went back to its outbox; its workers relay them within a sweep\n`);
    return 0;
  });
}
