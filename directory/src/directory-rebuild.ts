// Rebuilds the directory's data from what the cells hold when the generation marker is missing (a Redis
// that forgot, or a first start), then writes the marker so placements resume (docs/decisions/0023).
// One rebuilder at a time across directory instances: the rebuild lock in Redis, extended per page.
import type { CellInventoryAnswer, DirectoryEntry, DirectoryEntryKind } from "@cellwire/protocol";
import type { ServiceLogger } from "@cellwire/cluster";
import { mergeInventories, type CellKeyRow } from "./rebuild-merge.ts";
import type { RedisDirectory } from "./redis-directory.ts";

export type RebuildLimits = {
  /** Keys one cell.inventory page asks for. */
  readonly pageKeysMax: number;
  /** Pages read from one cell for one kind before the rebuild gives up (a cell that never says done). */
  readonly pagesPerCellMax: number;
  /** Rows held in memory for the merge; past it the rebuild fails loudly rather than exhaust the heap. */
  readonly rowsMax: number;
  /** Entries written per Redis script call. */
  readonly writeBatchMax: number;
  /** The rebuild lock's lifetime, extended at every page and batch: a crashed rebuilder frees it by then. */
  readonly lockMs: number;
  /** Waits between attempts while the marker is missing (a cell does not answer, another instance rebuilds). */
  readonly retryDelayMsMin: number;
  readonly retryDelayMsMax: number;
};

export const rebuildLimitsDefault: RebuildLimits = {
  pageKeysMax: 1000,
  pagesPerCellMax: 100_000,
  rowsMax: 5_000_000,
  writeBatchMax: 500,
  lockMs: 15_000,
  retryDelayMsMin: 100,
  retryDelayMsMax: 2_000,
};

export type RebuildDependencies = {
  readonly directory: Pick<
    RedisDirectory,
    "generation" | "lockRebuild" | "writeRebuiltEntries" | "rebuildLock" | "registerCell" | "listCells"
  >;
  /** The cells that ever ran in the namespace (their membership buckets), whether the registry knows them or not. */
  readonly listCellIds: () => Promise<string[]>;
  /** One cell.inventory page from any worker of `cellId`; throws when no worker answers. */
  readonly inventoryPage: (cellId: string, kind: DirectoryEntryKind, afterId: string, limit: number) => Promise<CellInventoryAnswer>;
  readonly logger: Pick<ServiceLogger, "info" | "warn">;
  /** A token unique to this attempt (the lock's value) and a generation id for the marker. */
  readonly uniqueId: () => string;
  readonly sleep: (ms: number) => Promise<void>;
  readonly limits: RebuildLimits;
  /** Told of each rebuild this instance completed (cellwire_directory_rebuilds_total). */
  readonly rebuilt?: () => void;
};

export type RebuildOutcome =
  | { readonly outcome: "complete"; readonly generation: string }
  | { readonly outcome: "rebuilt"; readonly generation: string; readonly cells: number; readonly entries: number; readonly written: number }
  | { readonly outcome: "locked" }
  | { readonly outcome: "failed"; readonly reason: string };

const kinds: readonly DirectoryEntryKind[] = ["user", "conversation"];

/** Raised inside an attempt when another rebuilder took the lock over (ours expired): the attempt ends. */
class LockLostError extends Error {
  override readonly name = "LockLostError";
}

export class DirectoryRebuilder {
  private running: Promise<void> | undefined;
  private stopped = false;
  private known = false;

  constructor(private readonly dependencies: RebuildDependencies) {}

  /** True once this instance saw the marker (or wrote it); a missing marker seen later resets it. */
  get complete(): boolean {
    return this.known;
  }

  /**
   * Makes sure a rebuild runs until the marker exists: starts one unless one is running. Called at start
   * and whenever a placement is refused for a missing marker. Never throws; failures are logged and retried.
   */
  ensure(): Promise<void> {
    if (this.stopped) return Promise.resolve();
    this.known = false;
    this.running ??= this.untilComplete().finally(() => (this.running = undefined));
    return this.running;
  }

  /** Ends the retry loop after the attempt in flight; an attempt holding the lock releases it. */
  async stop(): Promise<void> {
    this.stopped = true;
    await this.running;
  }

  private async untilComplete(): Promise<void> {
    const { limits, logger, sleep } = this.dependencies;
    let delayMs = limits.retryDelayMsMin;
    for (let attempt = 0; !this.stopped; attempt++) {
      const outcome = await this.attempt();
      switch (outcome.outcome) {
        case "complete":
          this.known = true;
          return;
        case "rebuilt":
          this.known = true;
          this.dependencies.rebuilt?.();
          logger.info(
            `directory rebuilt from ${outcome.cells} cells: ${outcome.entries} entries, ${outcome.written} written (generation ${outcome.generation}); placements resume`,
          );
          return;
        case "locked":
          if (attempt === 0) logger.info("another directory instance is rebuilding the data; placements wait for it");
          break;
        case "failed":
          logger.warn(`directory rebuild failed (placements stay refused, retrying): ${outcome.reason}`);
          break;
      }
      await sleep(delayMs);
      delayMs = Math.min(limits.retryDelayMsMax, delayMs * 2);
    }
  }

  /** One attempt: the marker is there, or another instance holds the lock, or this one rebuilds. */
  async attempt(): Promise<RebuildOutcome> {
    const { directory, limits, uniqueId } = this.dependencies;
    let token: string | undefined;
    try {
      const generation = await directory.generation();
      if (generation !== undefined) return { outcome: "complete", generation };
      token = uniqueId();
      if (!(await directory.lockRebuild(token, limits.lockMs))) return { outcome: "locked" };
      const rebuilt = await this.rebuild(token);
      token = undefined;
      return rebuilt;
    } catch (error) {
      if (error instanceof LockLostError) return { outcome: "locked" };
      return { outcome: "failed", reason: error instanceof Error ? error.message : String(error) };
    } finally {
      // A failed attempt frees the lock at once rather than after its lifetime.
      if (token !== undefined) await directory.rebuildLock(token, limits.lockMs, { kind: "release" }).catch(() => false);
    }
  }

  private async rebuild(token: string): Promise<RebuildOutcome> {
    const { directory, limits, logger, uniqueId } = this.dependencies;
    // The registry may know a cell whose bucket is gone, the buckets one the registry forgot: ask both.
    const cellIds = [
      ...new Set([...(await this.dependencies.listCellIds()), ...(await directory.listCells()).map((cell) => cell.cellId)]),
    ].sort();
    logger.info(`the directory's generation marker is missing: rebuilding from ${cellIds.length} cells (${cellIds.join(", ") || "none"})`);
    const rows: CellKeyRow[] = [];
    const weights = new Map<string, number>();
    for (const cellId of cellIds) {
      for (const kind of kinds) {
        const before = rows.length;
        await this.readCell(token, cellId, kind, rows, weights);
        logger.info(`rebuild: cell ${cellId} holds ${rows.length - before} ${kind} rows`);
      }
    }
    const { entries, problems } = mergeInventories(rows);
    for (const problem of problems.slice(0, 100)) logger.warn(`rebuild: ${problem}`);
    if (problems.length > 100) logger.warn(`rebuild: ${problems.length - 100} more problems not logged`);
    // Cells first: an entry on a cell the registry does not know could not be moved or drained.
    for (const [cellId, weight] of weights) {
      const registered = await directory.registerCell(cellId, weight);
      if (!registered.ok) throw new Error(`cell ${cellId} could not be registered: ${registered.message}`);
    }
    let written = 0;
    for (let start = 0; start < entries.length; start += limits.writeBatchMax) {
      const batch: DirectoryEntry[] = entries.slice(start, start + limits.writeBatchMax);
      const count = await directory.writeRebuiltEntries(token, limits.lockMs, batch);
      if (count === false) throw new LockLostError("the rebuild lock expired while writing");
      written += count;
    }
    const generation = uniqueId();
    if (!(await directory.rebuildLock(token, limits.lockMs, { kind: "complete", generation })))
      throw new LockLostError("the rebuild lock expired before the marker");
    return { outcome: "rebuilt", generation, cells: cellIds.length, entries: entries.length, written };
  }

  private async readCell(
    token: string,
    cellId: string,
    kind: DirectoryEntryKind,
    rows: CellKeyRow[],
    weights: Map<string, number>,
  ): Promise<void> {
    const { directory, limits } = this.dependencies;
    let afterId = "";
    for (let page = 0; page < limits.pagesPerCellMax; page++) {
      if (this.stopped) throw new Error("the directory is stopping");
      const answer = await this.dependencies.inventoryPage(cellId, kind, afterId, limits.pageKeysMax);
      if (answer.type === "cell.error")
        throw new Error(`cell ${cellId} answered ${answer.code} for its ${kind} inventory: ${answer.message}`);
      if (answer.cellId !== cellId || answer.kind !== kind)
        throw new Error(`cell ${cellId} answered an inventory of ${answer.kind} for cell ${answer.cellId}`);
      weights.set(cellId, answer.weight);
      for (const key of answer.keys) {
        if (key.id <= afterId) throw new Error(`cell ${cellId} listed ${kind} ${key.id} out of order`);
        afterId = key.id;
        rows.push({ cellId, kind, key });
      }
      if (rows.length > limits.rowsMax) throw new Error(`more than ${limits.rowsMax} rows to merge; raise the limit`);
      if (!(await directory.rebuildLock(token, limits.lockMs, { kind: "extend" })))
        throw new LockLostError("the rebuild lock expired while reading");
      if (answer.done) return;
      if (answer.keys.length === 0) throw new Error(`cell ${cellId} answered an empty ${kind} page that is not the last`);
    }
    throw new Error(`cell ${cellId} listed more than ${limits.pagesPerCellMax} pages of ${kind} rows`);
  }
}
