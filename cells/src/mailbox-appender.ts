// Applies one outbox entry at its recipient's mailbox owner: the recipient's home cell comes from the
// directory (cached), the owner from that cell's ring (CellRouter), and the entry counts as applied only
// when the owner answers cell.appended. Every failure throws; the relay leaves the row for a retry.
import { RemoteError } from "@cellwire/cluster";
import type { CellReply, CellRequest } from "@cellwire/protocol";
import type { BoundedCache } from "./bounded-cache.ts";
import type { OutboxEntry } from "./store/store.ts";

/** What the appender needs of DirectoryClient. */
export type HomeCellDirectory = { resolveUser(userId: string): Promise<{ readonly entry: { readonly cellId: string } }> };
/** What the appender needs of CellRouter. */
export type CellRequester = { request(cellId: string, request: CellRequest): Promise<CellReply> };

export class MailboxAppender {
  constructor(
    private readonly directory: HomeCellDirectory,
    private readonly router: CellRequester,
    /** userId → home cell id. */
    private readonly homeCells: BoundedCache<string>,
  ) {}

  /** Resolves with the event's seq in the recipient's mailbox once its owner has stored it. */
  async append(entry: OutboxEntry): Promise<number> {
    const userId = entry.recipientUserId;
    const cellId = await this.homeCell(userId);
    let reply: CellReply;
    try {
      reply = await this.router.request(cellId, { type: "cell.appendMailbox", userId, eventId: entry.eventId, event: entry.event });
    } catch (error) {
      // The user may have moved to another cell: ask the directory again next time.
      this.homeCells.delete(userId);
      throw error;
    }
    if (reply.type === "cell.appended" && reply.userId === userId) return reply.seq;
    this.homeCells.delete(userId);
    if (reply.type === "cell.error") throw new RemoteError(reply.code, `cell ${cellId} refused the mailbox event of ${userId}: ${reply.message}`);
    throw new RemoteError("internal", `cell ${cellId} answered ${reply.type} to cell.appendMailbox for ${userId}`);
  }

  private async homeCell(userId: string): Promise<string> {
    const cached = this.homeCells.get(userId);
    if (cached !== undefined) return cached;
    const { entry } = await this.directory.resolveUser(userId);
    this.homeCells.set(userId, entry.cellId);
    return entry.cellId;
  }
}
