// Where one session stands in one conversation's log, pure: which live messages go to the device at once,
// which wait while the log is read, and when to read more (docs/decisions/0009). It keeps the promise
// that a session receives a conversation's messages in seq order with no gap and no duplicate from its
// start point, whether they arrive in a page, live, or both. The mailbox's cursor (mailbox-cursor.ts)
// keeps the same promise for mailbox events; this one has no floor (a log is never cut) and may start at
// a point only the cell knows: the member's join point.
import type { Message } from "@cellwire/protocol";
import type { HeldBytesBudget } from "./held-bytes.ts";

export type LiveDecision = "send" | "drop" | "hold" | "start_sync";

/** What a read of the log answered: `afterSeq` is where the page starts (the join point, when asked). */
export type ConversationPage = { readonly afterSeq: number; readonly messages: readonly Message[]; readonly headSeq: number };

/** A live message held while the log is read, with the bytes it took from the session's budget. */
type HeldMessage = { readonly message: Message; readonly bytes: number };

export class ConversationCursor {
  private seqValue: number | undefined;
  private syncing: boolean;
  private readonly held = new Map<number, HeldMessage>();
  private overflowed = false;

  /**
   * @param startAfterSeq the last seq the device holds, or undefined to start at the member's join point
   *   (the first read learns it); either way the cursor starts by reading the log.
   * @param heldMessagesMax live messages kept while the log is read; past it they are read from the log.
   * @param heldBytes the session's budget of held bytes, shared with its other cursors; past it too.
   */
  static reading(startAfterSeq: number | undefined, heldMessagesMax: number, heldBytes: HeldBytesBudget): ConversationCursor {
    return new ConversationCursor(startAfterSeq, true, heldMessagesMax, heldBytes);
  }

  /** A cursor that starts live just before `message` (a live session): nothing is read unless a gap shows. */
  static liveFrom(message: Message, heldMessagesMax: number, heldBytes: HeldBytesBudget): ConversationCursor {
    return new ConversationCursor(message.seq - 1, false, heldMessagesMax, heldBytes);
  }

  private constructor(
    startAfterSeq: number | undefined,
    syncing: boolean,
    private readonly heldMessagesMax: number,
    private readonly heldBytes: HeldBytesBudget,
  ) {
    this.seqValue = startAfterSeq;
    this.syncing = syncing;
  }

  /** The seq of the last message written to the device (undefined before the join point is known). */
  get seq(): number | undefined {
    return this.seqValue;
  }

  get isSyncing(): boolean {
    return this.syncing;
  }

  /** Where the next read starts (null: from the member's join point) and how many to ask for. */
  nextPageRequest(pageLimit: number): { readonly afterSeq: number | null; readonly limit: number } {
    return { afterSeq: this.seqValue ?? null, limit: pageLimit };
  }

  /**
   * A live message arrived, `frameLength` the length of its encoded frame (what holding it costs). "send":
   * write it now (the cursor advanced); "start_sync": a gap, read the log.
   */
  live(message: Message, frameLength: number): LiveDecision {
    if (this.seqValue !== undefined && message.seq <= this.seqValue) return "drop";
    if (this.syncing || this.seqValue === undefined) {
      this.hold(message, frameLength);
      return "hold";
    }
    if (message.seq === this.seqValue + 1) {
      this.seqValue = message.seq;
      return "send";
    }
    this.hold(message, frameLength);
    this.syncing = true;
    return "start_sync";
  }

  /** Asks for the log to be read again from the cursor; false when a read is already due. */
  requestSync(): boolean {
    if (this.syncing) return false;
    this.syncing = true;
    return true;
  }

  /** Applies a page read from the log; returns what to write and whether the log is read to its head. */
  applyPage(page: ConversationPage): { readonly messages: Message[]; readonly done: boolean } {
    this.seqValue ??= page.afterSeq;
    const messages: Message[] = [];
    for (const message of page.messages) {
      if (message.seq <= this.seqValue) continue;
      if (message.seq !== this.seqValue + 1) break;
      messages.push(message);
      this.seqValue = message.seq;
    }
    const done = messages.length === 0 || this.seqValue >= page.headSeq;
    return { messages, done };
  }

  /**
   * Called when the pages are read: returns the held messages that follow on, in order. `complete` false
   * means a gap remains (or held messages overflowed): read pages again before calling this once more.
   */
  finishSync(): { readonly messages: Message[]; readonly complete: boolean } {
    const messages: Message[] = [];
    const start = this.seqValue ?? 0;
    for (const [seq, item] of this.held) {
      if (seq > start) continue;
      this.held.delete(seq);
      this.heldBytes.give(item.bytes);
    }
    let next = start + 1;
    for (let item = this.held.get(next); item !== undefined; item = this.held.get(next)) {
      messages.push(item.message);
      this.held.delete(next);
      this.heldBytes.give(item.bytes);
      this.seqValue = next;
      next++;
    }
    const complete = this.held.size === 0 && !this.overflowed;
    this.overflowed = false;
    if (complete) this.syncing = false;
    return { messages, complete };
  }

  /** The cursor is forgotten (the session no longer follows the conversation): its held bytes go back. */
  release(): void {
    for (const item of this.held.values()) this.heldBytes.give(item.bytes);
    this.held.clear();
  }

  private hold(message: Message, bytes: number): void {
    // Past either bound the message is not held; it is read from the log after the pages (decision 0018).
    if (this.held.has(message.seq)) return;
    if (this.held.size >= this.heldMessagesMax || !this.heldBytes.tryTake(bytes)) {
      this.overflowed = true;
      return;
    }
    this.held.set(message.seq, { message, bytes });
  }
}
