// Applies one outbox entry at its recipient's mailbox owner: the recipient's home cell comes from the
// directory (cached), the owner from that cell's ring (CellRouter), and the entry counts as applied only
// when the owner answers cell.appended. A mailbox that moved to another cell is followed (cell.moved) and
// one frozen for a move is waited out (moving), through the Router that edges use too. Every failure
// throws; the relay leaves the row for a retry (appends are idempotent by event id, so none doubles).
import {
  CachedHomes,
  directoryCacheKey,
  expectCellReply,
  Router,
  routerDefaults,
  RemoteError,
  type CellRequester,
  type DirectoryCache,
  type RouterDependencies,
  type RouterOptions,
  sleep,
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

export class MailboxAppender {
  private readonly router: Router;

  constructor(
    directory: HomeCellDirectory,
    router: CellRequester,
    /** The recipients' entries: users only, kept in step with directory.changed by the caller. */
    private readonly homeCells: DirectoryCache,
    routing: MailboxAppenderRouting = systemRouting,
  ) {
    // resolveUser places a user seen for the first time; the relay has only users' mailboxes to reach.
    const homes = new CachedHomes(async (key) => {
      if (key.kind !== "user") throw new TypeError(`the mailbox appender has no home for ${key.kind} ${key.id}`);
      return (await directory.resolveUser(key.id)).entry;
    }, homeCells);
    this.router = new Router(homes, router, routing.options, routing.dependencies);
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
      this.homeCells.forget(directoryCacheKey("user", userId));
      throw error;
    }
  }
}
