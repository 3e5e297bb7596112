// What an operator does to move keys between cells: migrate one user's mailbox or one conversation
// (`cellwire migrate`), or drain a cell (`cellwire drain`). The move itself runs in the key's home cell
// (cell.migrate, docs/decisions/0008-live-migration.md); this side finds the home, asks it, follows a key
// that moved meanwhile and waits out one that is moving, and for a drain walks the directory's list of
// what the cell homes until nothing is left.
import type { NatsConnection } from "@nats-io/transport-node";
import {
  backoffDelayMs,
  DirectoryClient,
  directoryHomes,
  RemoteError,
  sleep,
  startRouter,
  systemClock,
  type BackoffPolicy,
  type Logger,
  type RunningRouter,
} from "@cellwire/cluster";
import {
  cellEntriesPageMax,
  type CellErrorCode,
  type CellMigratedReply,
  type CellRecord,
  type CellStatsReply,
  type DirectoryEntryKind,
} from "@cellwire/protocol";

/** One migration request waits this long for its reply: it copies the key, which may hold many pages. */
const migrateRequestTimeoutMs = 60_000;
const directoryTimeoutMs = 5000;
/** Lookups and asks of one key before giving up: each retry follows a move or waits out a running one. */
const migrateAttemptsMax = 8;
const migrateRetryBackoff: BackoffPolicy = { initialDelayMs: 50, maxDelayMs: 1000, multiplier: 2 };
/** A drain walks the directory again until a pass finds nothing; a cell that keeps getting keys is reported. */
const drainPassesMax = 5;
/** Ids asked of the directory per page while draining. */
const drainPageCount = Math.min(200, cellEntriesPageMax);
/** How long a drain waits for the cell's last outbox rows (relays of moved conversations) to be applied. */
const drainSettleDeadlineMs = 30_000;
const drainSettlePollMs = 200;

export type MigrationResult = Omit<CellMigratedReply, "type">;

/** Refusals of cell.migrate that a later attempt may not meet. */
const retryableCodes: ReadonlySet<CellErrorCode> = new Set<CellErrorCode>([
  "cell_unavailable",
  "directory_unavailable",
  "not_owner",
  "internal",
]);

export class MigrationError extends Error {
  override readonly name = "MigrationError";
}

export type MigrationTools = {
  readonly directory: DirectoryClient;
  readonly router: RunningRouter;
  readonly stop: () => void;
};

const quietLogger: Logger = { info: () => {}, warn: () => {} };

/** A directory client and a router to every cell, as any service has them; `stop` ends the cells' watches. */
export function migrationTools(connection: NatsConnection, namespace: string, logger: Logger = quietLogger): MigrationTools {
  const directory = new DirectoryClient(connection, namespace, directoryTimeoutMs);
  // Every request the CLI sends names its cell (cell.migrate at the home just looked up, with its own
  // retry rules below; stats and dead letters of a named cell): toCell.
  const router = startRouter(
    connection,
    {
      ring: {
        namespace,
        leaseMs: 2000,
        requestTimeoutMs: migrateRequestTimeoutMs,
        attemptsMax: 4,
        deadlineMs: migrateRequestTimeoutMs,
        retryBackoff: { initialDelayMs: 100, maxDelayMs: 1000, multiplier: 2 },
        watchedCellsMax: 64,
        // The admin's NATS user reads membership buckets but does not write them (docs/decisions/0015).
        deletesExpiredLeases: false,
      },
      homes: directoryHomes(directory),
    },
    { clock: systemClock, logger },
  );
  return { directory, router, stop: () => router.stop() };
}

/**
 * Moves a user's mailbox or a conversation to `toCellId`, asking its current home; resolves with what
 * the home reported (the pause its writes saw, the items copied). A key already there resolves with
 * alreadyMoved and no pause.
 */
export async function migrateKey(
  tools: MigrationTools,
  kind: DirectoryEntryKind,
  id: string,
  toCellId: string,
  random: () => number = Math.random,
): Promise<MigrationResult> {
  let lastProblem = "no attempt made";
  for (let attempt = 0; attempt < migrateAttemptsMax; attempt++) {
    if (attempt > 0) await sleep(Math.max(10, backoffDelayMs(migrateRetryBackoff, attempt - 1, random)));
    const entry = await tools.directory.lookup(kind, id);
    if (entry === undefined) throw new MigrationError(`the directory has no ${kind} ${id}`);
    if (entry.cellId === toCellId) {
      return { kind, id, fromCellId: entry.cellId, toCellId, epoch: entry.epoch, pauseMs: 0, copiedItems: 0, alreadyMoved: true };
    }
    const reply = await tools.router.toCell(entry.cellId, { type: "cell.migrate", kind, id, toCellId });
    switch (reply.type) {
      case "cell.migrated": {
        const { type: _type, ...result } = reply;
        return result;
      }
      case "cell.moved":
        lastProblem = `${kind} ${id} moved to cell ${reply.cellId} meanwhile`;
        continue;
      case "cell.error":
        // Another move of the key under way, one that just won, or a cell briefly unreachable (a worker
        // starting or failing over): each may pass, so the move is asked again after a backoff.
        if (reply.code === "moving" || reply.code === "entry_changed" || retryableCodes.has(reply.code)) {
          lastProblem = `${kind} ${id}: cell ${entry.cellId} answered ${reply.code}: ${reply.message}`;
          continue;
        }
        throw new RemoteError(reply.code, `cell ${entry.cellId} refused to move ${kind} ${id}: ${reply.message}`);
      default:
        throw new MigrationError(`cell ${entry.cellId} answered ${reply.type} to cell.migrate`);
    }
  }
  throw new MigrationError(`gave up moving ${kind} ${id} after ${migrateAttemptsMax} attempts: ${lastProblem}`);
}

/** Picks a target among active cells other than `excludedCellId`, by weight. */
export function pickCellByWeight(cells: readonly CellRecord[], excludedCellId: string, random: () => number): string | undefined {
  const candidates = cells.filter((cell) => cell.state === "active" && cell.cellId !== excludedCellId);
  const total = candidates.reduce((sum, cell) => sum + cell.weight, 0);
  if (total === 0) return undefined;
  let threshold = random() * total;
  for (const cell of candidates) {
    threshold -= cell.weight;
    if (threshold < 0) return cell.cellId;
  }
  return candidates[candidates.length - 1]?.cellId;
}

export type DrainProgress = {
  readonly movedUsers: number;
  readonly movedConversations: number;
  readonly failed: number;
  readonly elapsedMs: number;
  readonly pass: number;
};

export type DrainReport = DrainProgress & {
  readonly pausesMs: readonly number[];
  readonly stats: Omit<CellStatsReply, "type">;
  readonly failures: readonly string[];
};

export type DrainOptions = {
  /** Moves in flight at once. */
  readonly concurrency: number;
  readonly onProgress?: (progress: DrainProgress) => void;
  readonly random?: () => number;
};

/**
 * Marks the cell draining (placement skips it from now on), moves every user and conversation the
 * directory lists on it to active cells by weight, walking the list again until a pass finds nothing,
 * then waits until the cell homes nothing and holds no pending relay. Throws MigrationError when keys
 * are left.
 */
export async function drainCell(tools: MigrationTools, cellId: string, options: DrainOptions): Promise<DrainReport> {
  const random = options.random ?? Math.random;
  const startedAtMs = performance.now();
  const cells = await tools.directory.setCellState(cellId, "draining");
  if (pickCellByWeight(cells, cellId, random) === undefined) {
    throw new MigrationError(`no other active cell can take what cell ${cellId} homes`);
  }
  let movedUsers = 0;
  let movedConversations = 0;
  const pausesMs: number[] = [];
  const failures: string[] = [];
  let pass = 0;
  const progress = (): DrainProgress => ({
    movedUsers,
    movedConversations,
    failed: failures.length,
    elapsedMs: performance.now() - startedAtMs,
    pass,
  });
  // A pass walks the directory's list of the cell's keys; keys placed or moved in meanwhile are found by
  // the next pass, and the drain ends with a pass that finds nothing.
  for (pass = 1; pass <= drainPassesMax; pass++) {
    let foundInPass = 0;
    failures.length = 0;
    for (const kind of ["conversation", "user"] as const) {
      let cursor = "0";
      do {
        const page = await tools.directory.cellEntries(cellId, kind, cursor, drainPageCount);
        cursor = page.cursor;
        foundInPass += page.ids.length;
        const registry = await tools.directory.listCells();
        await forEachLimited(page.ids, options.concurrency, async (id) => {
          const target = pickCellByWeight(registry, cellId, random);
          if (target === undefined) {
            failures.push(`${kind} ${id}: no active cell to move to`);
            return;
          }
          try {
            const result = await migrateKey(tools, kind, id, target, random);
            if (result.alreadyMoved) return; // listed before it moved: counted by the move that did it
            if (kind === "user") movedUsers += 1;
            else movedConversations += 1;
            pausesMs.push(result.pauseMs);
          } catch (error) {
            failures.push(`${kind} ${id}: ${error instanceof Error ? error.message : String(error)}`);
          }
        });
        options.onProgress?.(progress());
      } while (cursor !== "0");
    }
    if (foundInPass === 0) break;
  }
  const stats = await settledStats(tools, cellId);
  const report: DrainReport = { ...progress(), pausesMs, stats, failures: [...failures] };
  if (failures.length > 0 || stats.users > 0 || stats.conversations > 0 || stats.frozen > 0 || stats.outboxRows > 0) {
    throw Object.assign(
      new MigrationError(
        `cell ${cellId} still homes ${stats.users} users, ${stats.conversations} conversations, ${stats.frozen} frozen keys and ${stats.outboxRows} pending relays` +
          (failures.length > 0
            ? `; failed: ${failures.slice(0, 5).join("; ")}${failures.length > 5 ? ` and ${failures.length - 5} more` : ""}`
            : ""),
      ),
      { report },
    );
  }
  return report;
}

/** The cell's counts once its pending relays are applied, or as they are at the deadline. */
async function settledStats(tools: MigrationTools, cellId: string): Promise<Omit<CellStatsReply, "type">> {
  const deadlineMs = performance.now() + drainSettleDeadlineMs;
  for (;;) {
    const reply = await tools.router.toCell(cellId, { type: "cell.stats" });
    if (reply.type !== "cell.stats") {
      throw new MigrationError(
        `cell ${cellId} answered ${reply.type === "cell.error" ? `${reply.code}: ${reply.message}` : reply.type} to cell.stats`,
      );
    }
    const { type: _type, ...stats } = reply;
    const settled = stats.users === 0 && stats.conversations === 0 && stats.frozen === 0 && stats.outboxRows === 0;
    if (settled || performance.now() > deadlineMs) return stats;
    await sleep(drainSettlePollMs);
  }
}

/** Runs `work` on every item with at most `limit` at once. */
async function forEachLimited<T>(items: readonly T[], limit: number, work: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  const lanes = Array.from({ length: Math.max(1, Math.min(limit, items.length)) }, async () => {
    while (next < items.length) {
      const item = items[next] as T;
      next += 1;
      await work(item);
    }
  });
  await Promise.all(lanes);
}
