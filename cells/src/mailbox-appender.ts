// Applies one outbox entry at its recipient's mailbox owner: the recipient's home cell comes from the
// directory (cached), the owner from that cell's ring (CellRouter), and the entry counts as applied only
// when the owner answers cell.appended. A mailbox that moved to another cell is followed (cell.moved) and
// one frozen for a move is waited out (moving), through the HomeRouter that edges use too. Every failure
// throws; the relay leaves the row for a retry (appends are idempotent by event id, so none doubles).
import {
  HomeRouter,
  homeRouterDefaults,
  RemoteError,
  type CellRequester,
  type HomeDirectory,
  type HomeKey,
  type HomeLocation,
  type HomeOutcome,
  type HomeRouterDependencies,
  type HomeRouterOptions,
} from "@cellwire/cluster";
import type { BoundedCache } from "./bounded-cache.ts";
import type { OutboxEntry } from "./store/store.ts";

/** What the appender needs of DirectoryClient. */
export type HomeCellDirectory = { resolveUser(userId: string): Promise<{ readonly entry: { readonly cellId: string; readonly epoch: number } }> };
export type { CellRequester } from "@cellwire/cluster";

export type MailboxAppenderRouting = { readonly options: HomeRouterOptions; readonly dependencies: HomeRouterDependencies };

const systemRouting: MailboxAppenderRouting = {
  options: homeRouterDefaults,
  dependencies: {
    monotonicNowMs: () => performance.now(),
    random: Math.random,
    sleep: (ms) => new Promise((resolve) => setTimeout(resolve, ms)),
  },
};

/**
 * Homes from the worker's cache of user → cell id. The cache keeps no epoch (the worker drops entries on
 * directory.changed instead), so a cached home counts as epoch 0: every cell.moved is newer than it.
 */
class CachedUserHomes implements HomeDirectory {
  constructor(
    private readonly directory: HomeCellDirectory,
    private readonly homeCells: BoundedCache<string>,
  ) {}

  async resolve(key: HomeKey): Promise<HomeLocation | undefined> {
    const cached = this.homeCells.get(key.id);
    if (cached !== undefined) return { cellId: cached, epoch: 0 };
    const { entry } = await this.directory.resolveUser(key.id);
    this.homeCells.set(key.id, entry.cellId);
    return { cellId: entry.cellId, epoch: entry.epoch };
  }

  moved(key: HomeKey, location: HomeLocation): void {
    this.homeCells.set(key.id, location.cellId);
  }

  forget(key: HomeKey): void {
    this.homeCells.delete(key.id);
  }
}

export class MailboxAppender {
  private readonly homes: HomeRouter;

  constructor(
    directory: HomeCellDirectory,
    router: CellRequester,
    /** userId → home cell id. */
    private readonly homeCells: BoundedCache<string>,
    routing: MailboxAppenderRouting = systemRouting,
  ) {
    this.homes = new HomeRouter(new CachedUserHomes(directory, homeCells), router, routing.options, routing.dependencies);
  }

  /** Resolves with the event's seq in the recipient's mailbox once its owner has stored it. */
  async append(entry: OutboxEntry): Promise<number> {
    const userId = entry.recipientUserId;
    let outcome: HomeOutcome;
    try {
      outcome = await this.homes.request({ type: "cell.appendMailbox", userId, eventId: entry.eventId, event: entry.event });
    } catch (error) {
      // A move whose directory.changed this worker missed shows as silence or a key that never settles:
      // ask the directory again next time.
      this.homeCells.delete(userId);
      throw error;
    }
    // resolveUser places a user seen for the first time, so every user has an entry.
    if (outcome.kind === "no_entry") throw new RemoteError("internal", `the directory has no entry for ${userId}`);
    const { reply, home } = outcome;
    if (reply.type === "cell.appended" && reply.userId === userId) return reply.seq;
    this.homeCells.delete(userId);
    if (reply.type === "cell.error") throw new RemoteError(reply.code, `cell ${home.cellId} refused the mailbox event of ${userId}: ${reply.message}`);
    throw new RemoteError("internal", `cell ${home.cellId} answered ${reply.type} to cell.appendMailbox for ${userId}`);
  }
}
