// `cellwire dead-letters list [--cell <id>]` and `cellwire dead-letters redrive <cellId> [ids…|--all]`:
// the outbox rows whose recipient could not be reached WORKER_RELAY_FAILURES_MAX times
// (docs/decisions/0022), read from the cells over their admin channel and moved back to the outbox
// once the recipient is reachable again. The owners' sweepers then relay them.
import { UnavailableError } from "@cellwire/cluster";
import {
  deadLettersPageLimitMax,
  isCellId,
  redriveIdsMax,
  type CellReply,
  type CellRequest,
  type DeadLetterSummary,
} from "@cellwire/protocol";
import { MigrationError, migrationTools, type MigrationTools } from "./migration.ts";
import { withConnection, type OperatorOptions } from "./migration-commands.ts";

/** Pages one redrive --all walks before it stops (and says so): 2,000,000 rows. */
const redriveAllPagesMax = 10_000;

/** What a cell answered, or why it could not be asked. */
async function ask(tools: MigrationTools, cellId: string, request: CellRequest): Promise<CellReply> {
  const reply = await tools.router.toCell(cellId, request);
  if (reply.type === "cell.error") throw new MigrationError(`cell ${cellId} answered ${reply.code}: ${reply.message}`);
  return reply;
}

/** Up to `rowsMax` dead letters of one cell, in id order (pages of deadLettersPageLimitMax). */
async function cellDeadLetters(
  tools: MigrationTools,
  cellId: string,
  rowsMax: number,
): Promise<{ deadLetters: DeadLetterSummary[]; more: boolean }> {
  const deadLetters: DeadLetterSummary[] = [];
  let afterId = 0;
  while (deadLetters.length < rowsMax) {
    const limit = Math.min(deadLettersPageLimitMax, rowsMax - deadLetters.length);
    const reply = await ask(tools, cellId, { type: "cell.deadLetters", afterId, limit });
    if (reply.type !== "cell.deadLetters") throw new MigrationError(`cell ${cellId} answered ${reply.type} to cell.deadLetters`);
    deadLetters.push(...reply.deadLetters);
    const last = reply.deadLetters.at(-1);
    if (last === undefined || reply.deadLetters.length < limit) return { deadLetters, more: false };
    afterId = last.id;
  }
  const next = await ask(tools, cellId, { type: "cell.deadLetters", afterId, limit: 1 });
  return { deadLetters, more: next.type === "cell.deadLetters" && next.deadLetters.length > 0 };
}

/** Lists the dead letters of one cell, or of every registered cell; exit 1 when a cell could not be read. */
export function runDeadLettersList(cellId: string | undefined, rowsMax: number, options: OperatorOptions): Promise<number> {
  if (cellId !== undefined && !isCellId(cellId)) {
    process.stderr.write(`cellwire: ${JSON.stringify(cellId)} is not a cell id\n`);
    return Promise.resolve(2);
  }
  return withConnection(options, "cellwire-cli-dead-letters", async (connection) => {
    const tools = migrationTools(connection, options.namespace);
    try {
      const cellIds = cellId !== undefined ? [cellId] : (await tools.directory.listCells()).map((cell) => cell.cellId).sort();
      const rows: (DeadLetterSummary & { cellId: string })[] = [];
      const truncated: string[] = [];
      const unreachable: string[] = [];
      for (const id of cellIds) {
        try {
          const listed = await cellDeadLetters(tools, id, rowsMax);
          rows.push(...listed.deadLetters.map((deadLetter) => ({ cellId: id, ...deadLetter })));
          if (listed.more) truncated.push(id);
        } catch (error) {
          if (!(error instanceof UnavailableError || error instanceof MigrationError)) throw error;
          unreachable.push(id);
          process.stderr.write(`cellwire: the dead letters of cell ${id} could not be read: ${error.message}\n`);
        }
      }
      if (options.json) {
        process.stdout.write(
          `${JSON.stringify({ namespace: options.namespace, deadLetters: rows, truncatedCellIds: truncated, unreachableCellIds: unreachable })}\n`,
        );
      } else {
        process.stdout.write(
          `${rows.length} dead letters in ${cellIds.length === 1 ? `cell ${cellIds[0]}` : `${cellIds.length} cells`} of namespace ${options.namespace}\n`,
        );
        if (rows.length > 0) {
          process.stdout.write(
            `${"cell".padEnd(8)}${"id".padStart(10)}  ${"recipient".padEnd(20)}${"attempts".padStart(9)}  ${"dead since".padEnd(25)}conversation / event: last error\n`,
          );
        }
        for (const row of rows) {
          process.stdout.write(
            `${row.cellId.padEnd(8)}${String(row.id).padStart(10)}  ${row.recipientUserId.padEnd(20)}${String(row.attempts).padStart(9)}  ` +
              `${new Date(row.deadLetteredAtMs).toISOString().padEnd(25)}${row.conversationId} / ${row.eventId}: ${row.lastError}\n`,
          );
        }
        for (const id of truncated) process.stdout.write(`cell ${id} has more than ${rowsMax} dead letters (--limit)\n`);
      }
      return unreachable.length > 0 ? 1 : 0;
    } finally {
      tools.stop();
    }
  });
}

/**
 * Moves dead letters of `cellId` back to its outbox: the named ids (each with the rest of its
 * (conversation, recipient) group), or with "all" every one, page by page.
 */
export function runDeadLettersRedrive(cellId: string, selection: readonly number[] | "all", options: OperatorOptions): Promise<number> {
  if (!isCellId(cellId)) {
    process.stderr.write(`cellwire: ${JSON.stringify(cellId)} is not a cell id\n`);
    return Promise.resolve(2);
  }
  return withConnection(options, "cellwire-cli-dead-letters", async (connection) => {
    const tools = migrationTools(connection, options.namespace);
    try {
      let rows = 0;
      const redrive = async (ids: readonly number[]): Promise<void> => {
        const reply = await ask(tools, cellId, { type: "cell.redriveDeadLetters", ids: [...ids] });
        if (reply.type !== "cell.redriven") throw new MigrationError(`cell ${cellId} answered ${reply.type} to cell.redriveDeadLetters`);
        rows += reply.rows;
      };
      if (selection === "all") {
        // A cursor: rows that fail again and come back as dead letters keep their ids, so they are not met twice.
        let afterId = 0;
        for (let page = 0; ; page++) {
          if (page === redriveAllPagesMax)
            throw new MigrationError(`stopped after ${redriveAllPagesMax} pages (${rows} rows); run it again for the rest`);
          const reply = await ask(tools, cellId, {
            type: "cell.deadLetters",
            afterId,
            limit: Math.min(deadLettersPageLimitMax, redriveIdsMax),
          });
          if (reply.type !== "cell.deadLetters") throw new MigrationError(`cell ${cellId} answered ${reply.type} to cell.deadLetters`);
          const last = reply.deadLetters.at(-1);
          if (last === undefined) break;
          await redrive(reply.deadLetters.map((deadLetter) => deadLetter.id));
          afterId = last.id;
        }
      } else {
        for (let start = 0; start < selection.length; start += redriveIdsMax) await redrive(selection.slice(start, start + redriveIdsMax));
      }
      if (options.json) process.stdout.write(`${JSON.stringify({ cellId, redrivenRows: rows })}\n`);
      else process.stdout.write(`${rows} dead letters of cell ${cellId} went back to its outbox; its workers relay them within a sweep\n`);
      return 0;
    } finally {
      tools.stop();
    }
  });
}
