// Where one session stands in its user's mailbox, pure: it decides which live events go to the device at
// once, which wait while the backlog is read, and when to read more. It keeps the promise that a session
// receives the mailbox in seq order with no gap and no duplicate, whether events arrive in a page, live,
// or both. A device's seq counts in one mailbox, named by its incarnation (docs/decisions/0021): a seq
// the mailbox never reached, or a seq of another mailbox, is answered with a resync, never taken as read.
import type { SequencedEvent } from "@cellwire/protocol";
import type { HeldBytesBudget } from "./held-bytes.ts";

export type LiveDecision = "send" | "drop" | "hold" | "start_sync";

/**
 * `resync`: the device's seq means nothing in this mailbox and the session goes on from `headSeq`: the head
 * (events were cut, or the seq is beyond the head), or the floor of another mailbox, which the session then
 * reads like a new device's (`done` false while pages remain).
 */
export type PageOutcome =
  | { readonly kind: "events"; readonly events: SequencedEvent[]; readonly done: boolean }
  | { readonly kind: "resync"; readonly headSeq: number; readonly done: boolean };

/** `incarnation`: the mailbox's (undefined while the user has none, or from a worker before 0021). */
export type Page = {
  readonly events: readonly SequencedEvent[];
  readonly headSeq: number;
  readonly floorSeq: number;
  readonly incarnation?: string | undefined;
};

/** A live event held while the backlog is read, with the bytes it took from the session's budget. */
type HeldEvent = { readonly event: SequencedEvent; readonly bytes: number };

export class MailboxCursor {
  private seqValue: number | undefined;
  /**
   * A page has confirmed seqValue: until then it is only the device's claim, which may be beyond the head
   * or another mailbox's, so live events at or below it are held, not dropped as already sent.
   */
  private seqConfirmed = false;
  private syncing = true;
  /**
   * Live events held while the backlog is read, by seq. Made on the first one: most sessions never hold an
   * event, and an empty Map costs an idle session about 250 bytes.
   */
  private held: Map<number, HeldEvent> | undefined;
  private overflowed = false;
  /** The incarnation of the mailbox the seq counts in: the device's until a page names one. */
  private incarnationValue: string | undefined;
  /** Whether incarnationValue came from a page (else it is the device's, or unknown). */
  private incarnationRead = false;

  /**
   * @param resumeAfterSeq the last seq the device holds, or undefined to start live at the head.
   * @param heldEventsMax live events kept while the backlog is read; past it they are dropped and read
   *   from the mailbox instead (they are all in it).
   * @param heldBytes the session's budget of held bytes, shared with its conversation cursors; past it
   *   live events are read from the mailbox too.
   * @param resumeIncarnation the incarnation of the mailbox resumeAfterSeq counts in, when the device
   *   knows it (an SDK before decision 0021 does not).
   */
  constructor(
    resumeAfterSeq: number | undefined,
    private readonly heldEventsMax: number,
    private readonly heldBytes: HeldBytesBudget,
    resumeIncarnation?: string,
  ) {
    this.seqValue = resumeAfterSeq;
    this.incarnationValue = resumeIncarnation;
  }

  /**
   * The incarnation of the mailbox `seq` counts in, as the last page named it; undefined until a page
   * names one (the user has no mailbox yet, or its cell runs a worker before decision 0021).
   */
  get incarnation(): string | undefined {
    return this.incarnationRead ? this.incarnationValue : undefined;
  }

  /** The last seq sent to the device (undefined until the head is known). */
  get seq(): number | undefined {
    return this.seqValue;
  }

  get isSyncing(): boolean {
    return this.syncing;
  }

  /** Where the next page starts, and how many events to ask for (0 asks only for the head). */
  nextPageRequest(pageLimit: number): { afterSeq: number; limit: number } {
    return this.seqValue === undefined ? { afterSeq: 0, limit: 0 } : { afterSeq: this.seqValue, limit: pageLimit };
  }

  /**
   * A live event arrived, `frameLength` the length of its encoded frame (what holding it costs). "send":
   * write it now (the cursor advanced); "start_sync": a gap, read pages.
   */
  live(event: SequencedEvent, frameLength: number): LiveDecision {
    if (this.seqConfirmed && this.seqValue !== undefined && event.seq <= this.seqValue) return "drop";
    if (this.syncing || this.seqValue === undefined) {
      this.hold(event, frameLength);
      return "hold";
    }
    if (event.seq === this.seqValue + 1) {
      this.seqValue = event.seq;
      return "send";
    }
    this.hold(event, frameLength);
    this.syncing = true;
    return "start_sync";
  }

  /**
   * Asks for the mailbox to be read again from the cursor: after a change of the workers of the user's
   * home cell, a delivery published by a worker that died may never come. Returns whether a sync must
   * start (false when one is already due).
   */
  requestSync(): boolean {
    if (this.syncing || this.seqValue === undefined) return false;
    this.syncing = true;
    return true;
  }

  /** Applies a page read from the mailbox; returns what to write and whether the backlog is read. */
  applyPage(page: Page): PageOutcome {
    // Which mailbox the seq counts in. A page that names none (no mailbox row, or an older worker) can
    // neither confirm nor refute the device's; the seq is still checked against the head below.
    const otherMailbox =
      page.incarnation !== undefined && this.incarnationValue !== undefined && page.incarnation !== this.incarnationValue;
    this.incarnationRead = page.incarnation !== undefined;
    this.incarnationValue = page.incarnation;
    this.seqConfirmed = true;
    if (this.seqValue === undefined) {
      this.seqValue = page.headSeq;
      return { kind: "events", events: [], done: true };
    }
    if (otherMailbox) {
      // The device's seq is another mailbox's (a restored or re-created one, another account's cursor):
      // it holds none of this one's events, so it reads them from the floor on, as a new device does.
      this.seqValue = page.floorSeq;
      this.dropHeldUpTo(page.floorSeq);
      return { kind: "resync", headSeq: page.floorSeq, done: page.floorSeq >= page.headSeq };
    }
    const expected = this.seqValue + 1;
    const first = page.events[0];
    if (this.seqValue > page.headSeq || page.floorSeq > this.seqValue || (first !== undefined && first.seq !== expected)) {
      // Beyond the head (the mailbox lost events the device holds: a restored database), or the events
      // after our seq are gone (retention): the device reloads and continues from the head. Live events
      // after the head follow; taking the device's seq would drop them as held already.
      this.seqValue = page.headSeq;
      this.dropHeldUpTo(page.headSeq);
      return { kind: "resync", headSeq: page.headSeq, done: true };
    }
    const events: SequencedEvent[] = [];
    for (const event of page.events) {
      if (event.seq !== this.seqValue + 1) break;
      events.push(event);
      this.seqValue = event.seq;
    }
    const done = events.length === 0 || this.seqValue >= page.headSeq;
    return { kind: "events", events, done };
  }

  /**
   * Called when the pages are read: returns the held events that follow on, in order. `complete` false
   * means a gap remains (or held events overflowed): read pages again before calling this once more.
   */
  finishSync(): { events: SequencedEvent[]; complete: boolean } {
    const events: SequencedEvent[] = [];
    const start = this.seqValue ?? 0;
    this.dropHeldUpTo(start);
    const held = this.held;
    let next = start + 1;
    for (let item = held?.get(next); item !== undefined; item = held?.get(next)) {
      events.push(item.event);
      held?.delete(next);
      this.heldBytes.give(item.bytes);
      this.seqValue = next;
      next++;
    }
    if (held?.size === 0) this.held = undefined;
    const complete = this.held === undefined && !this.overflowed;
    this.overflowed = false;
    if (complete) this.syncing = false;
    return { events, complete };
  }

  private hold(event: SequencedEvent, bytes: number): void {
    this.held ??= new Map();
    // Past either bound the event is not held (a second copy of a seq already held is not charged twice);
    // it is read from the mailbox after the pages, like every event past the count (decision 0018).
    if (this.held.has(event.seq)) return;
    if (this.held.size >= this.heldEventsMax || !this.heldBytes.tryTake(bytes)) {
      this.overflowed = true;
      if (this.held.size === 0) this.held = undefined;
      return;
    }
    this.held.set(event.seq, { event, bytes });
  }

  private dropHeldUpTo(seq: number): void {
    const held = this.held;
    if (held === undefined) return;
    // Deleting the entry being visited is safe while iterating a Map.
    for (const [heldSeq, item] of held) {
      if (heldSeq > seq) continue;
      held.delete(heldSeq);
      this.heldBytes.give(item.bytes);
    }
    if (held.size === 0) this.held = undefined;
  }
}
