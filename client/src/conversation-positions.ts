// Where the device stands in each conversation it follows, pure: what each `message` frame means for the
// conversation's cursor (emit, drop as a duplicate, or a gap), where a `joined` event starts a cursor, and
// which cursors a resuming hello lists. cellwire-client.ts performs the outcome; client/BEHAVIOUR.md
// ("Conversations") is the table these follow. docs/decisions/0009 says why a device keeps one cursor per
// conversation.
import type { ConversationCursor } from "@cellwire/protocol";

/**
 * Cursors the client keeps. A hello lists at most resumeConversationsMax (1000) of them; the others still
 * drop the messages the device holds when an edge replays a conversation from the member's join point.
 * Past it the least recently updated cursor is forgotten, so a client in a million conversations stays
 * bounded.
 */
export const conversationCursorsMax = 10_000;

/** Every outcome carries the conversation's cursor after the frame. */
export type MessageOutcome =
  /** The next message of the conversation (or the first one seen for it): emit it. */
  | { readonly kind: "emit"; readonly cursor: number }
  /** The device already holds this seq: drop it silently. */
  | { readonly kind: "duplicate"; readonly cursor: number }
  /** Seqs between the cursor and this message were skipped: emit nothing and resume from the cursor. */
  | { readonly kind: "gap"; readonly cursor: number; readonly expectedSeq: number; readonly receivedSeq: number };

/** What a message with `seq` means for a conversation whose cursor is `cursor` (undefined: none yet). */
export function applyMessageSeq(cursor: number | undefined, seq: number): MessageOutcome {
  if (cursor === undefined || seq === cursor + 1) return { kind: "emit", cursor: seq };
  if (seq <= cursor) return { kind: "duplicate", cursor };
  return { kind: "gap", cursor, expectedSeq: cursor + 1, receivedSeq: seq };
}

/**
 * The cursors of one client: conversation id → the seq of the last message the device holds. Kept in
 * update order (an update re-inserts the entry), so the first entry is the least recently updated: the
 * one to forget past the limit, and the last to be listed in a hello.
 */
export class ConversationPositions {
  private readonly cursors = new Map<string, number>();

  /** `stored`: cursors the app kept from an earlier run, least recently updated first (as toRecord() gives them). */
  constructor(
    stored: Readonly<Record<string, number>> = {},
    private readonly cursorsMax = conversationCursorsMax,
  ) {
    for (const [conversationId, seq] of Object.entries(stored)) this.remember(conversationId, seq);
  }

  get size(): number {
    return this.cursors.size;
  }

  cursorOf(conversationId: string): number | undefined {
    return this.cursors.get(conversationId);
  }

  /**
   * Decides what a `message` frame means and applies it: an emitted message advances the cursor; a gap
   * leaves the cursor where it is but makes it the most recently updated, so the resuming hello lists
   * it whatever the limit; a duplicate changes nothing.
   */
  receive(conversationId: string, seq: number): MessageOutcome {
    const outcome = applyMessageSeq(this.cursors.get(conversationId), seq);
    if (outcome.kind !== "duplicate") this.remember(conversationId, outcome.cursor);
    return outcome;
  }

  /**
   * A `joined` event: the user's history in the conversation starts after `afterSeq`, so a conversation
   * without a cursor starts there (its first message is then checked for a gap like any other). A cursor
   * the device already has is never moved by it: the device may hold more than the join point.
   */
  joined(conversationId: string, afterSeq: number): void {
    if (!this.cursors.has(conversationId)) this.remember(conversationId, afterSeq);
  }

  /** The cursors a hello carries: the most recently updated first, at most `limit`. */
  resumeCursors(limit: number): ConversationCursor[] {
    const listed: ConversationCursor[] = [];
    const entries = [...this.cursors];
    for (let index = entries.length - 1; index >= 0 && listed.length < limit; index--) {
      const entry = entries[index];
      if (entry !== undefined) listed.push({ conversationId: entry[0], afterSeq: entry[1] });
    }
    return listed;
  }

  /** Every cursor, least recently updated first: what an app stores and passes back as resumeConversations. */
  toRecord(): Record<string, number> {
    return Object.fromEntries(this.cursors);
  }

  private remember(conversationId: string, seq: number): void {
    this.cursors.delete(conversationId);
    this.cursors.set(conversationId, seq);
    for (const oldest of this.cursors.keys()) {
      if (this.cursors.size <= this.cursorsMax) return;
      this.cursors.delete(oldest);
    }
  }
}
