// Applies one outbox entry at its recipient's mailbox owner: the recipient's home cell comes from the
// directory (cached), the owner from that cell's ring (CellRouter), and the entry counts as applied only
// when the owner answers cell.appended. A mailbox that moved to another cell is followed (cell.moved) and
// one frozen for a move is waited out (moving), through the Router that edges use too. Every failure
// throws; the relay leaves the row for a retry (appends are idempotent by event id, so none doubles).
import {
  expectCellReply,
  Router,
  routerDefaults,
  RemoteError,
  type CellRequester,
  type HomeDirectory,
  type HomeKey,
  type HomeLocation,
  type RouterDependencies,
  type RouterOptions,
  sleep,
  type BoundedCache,
} from "@cellwire/cluster";
import type { CellAppendMailboxRequest } from "@cellwire/protocol";
import type { OutboxEntry } from "./store/store.ts";

/** What the appender needs of DirectoryClient. */
export type HomeCellDirectory = {
  resolveUser(userId: string): Promise<{ readonly entry: { readonly cellId: string; readonly epoch: number } }>;
};
export type { CellRequester } from "@cellwire/cluster";

export type MailboxAppenderRouting = { readonly options: RouterOptions; readonly dependencies: RouterDependencies };

const systemRouting: MailboxAppenderRouting = {
  options: routerDefaults,
  dependencies: {
    monotonicNowMs: () => performance.now(),
    random: Math.random,
    sleep,
  },
};

/**
 * The worker's cache of user → home cell with the entry's epoch. An entry is replaced only by a newer
 * epoch, so a directory lookup that was on its way when a directory.changed arrived cannot put the old
 * home back, and a change is kept even for a user not cached yet (a lookup may be in flight).
 */
export class UserHomeCache {
  constructor(private readonly cache: BoundedCache<HomeLocation>) {}

  get(userId: string): HomeLocation | undefined {
    return this.cache.get(userId);
  }

  /** Keeps `home` unless the cache holds a newer one. */
  learn(userId: string, home: HomeLocation): void {
    const held = this.cache.get(userId);
    if (held === undefined || held.epoch < home.epoch) this.cache.set(userId, { cellId: home.cellId, epoch: home.epoch });
  }

  forget(userId: string): void {
    this.cache.delete(userId);
  }

  /** Drops the held home unless it is newer than `epoch`: one learnt since (directory.changed) is kept. */
  forgetUpTo(userId: string, epoch: number): void {
    const held = this.cache.get(userId);
    if (held !== undefined && held.epoch <= epoch) this.cache.delete(userId);
  }
}

class CachedUserHomes implements HomeDirectory {
  constructor(
    private readonly directory: HomeCellDirectory,
    private readonly homes: UserHomeCache,
  ) {}

  async resolve(key: HomeKey): Promise<HomeLocation | undefined> {
    const cached = this.homes.get(key.id);
    if (cached !== undefined) return cached;
    const { entry } = await this.directory.resolveUser(key.id);
    this.homes.learn(key.id, entry);
    // A change that arrived while the lookup was on its way wins over what the lookup found.
    return this.homes.get(key.id) ?? { cellId: entry.cellId, epoch: entry.epoch };
  }

  moved(key: HomeKey, location: HomeLocation): void {
    this.homes.learn(key.id, location);
  }

  forget(key: HomeKey, epoch: number): void {
    this.homes.forgetUpTo(key.id, epoch);
  }
}

export class MailboxAppender {
  private readonly router: Router;

  constructor(
    directory: HomeCellDirectory,
    router: CellRequester,
    private readonly homeCells: UserHomeCache,
    routing: MailboxAppenderRouting = systemRouting,
  ) {
    this.router = new Router(new CachedUserHomes(directory, homeCells), router, routing.options, routing.dependencies);
  }

  /** Resolves with the event's seq in the recipient's mailbox once its owner has stored it. */
  async append(entry: OutboxEntry): Promise<number> {
    const userId = entry.recipientUserId;
    const request: CellAppendMailboxRequest = { type: "cell.appendMailbox", userId, eventId: entry.eventId, event: entry.event };
    try {
      const outcome = await this.router.toHome(request);
      // resolveUser places a user seen for the first time, so every user has an entry.
      if (outcome.kind === "no_entry") throw new RemoteError("internal", `the directory has no entry for ${userId}`);
      const from = `cell ${outcome.home.cellId}`;
      const appended = expectCellReply(request, outcome.reply, from);
      if (appended.userId !== userId)
        throw new RemoteError("internal", `${from} answered cell.appended for ${appended.userId}, not ${userId}`);
      return appended.seq;
    } catch (error) {
      // A move whose directory.changed this worker missed shows as silence, a key that never settles or a
      // refusal: ask the directory again next time.
      this.homeCells.forget(userId);
      throw error;
    }
  }
}
