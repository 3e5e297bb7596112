// Sends `delivered` for messages of other users as they arrive: coalesced per conversation (only the
// highest seq), at most one in flight per conversation, each batch after a short delay so a burst of
// messages costs one frame per conversation. See BEHAVIOUR.md, "Receipts".
import type { CancelTimer, Clock } from "./clock.ts";

/** Conversations with a delivered position waiting or remembered; past it the oldest is forgotten. */
export const deliveredConversationsMax = 200;

export class DeliveredReporter {
  /** Conversation → the highest seq received and not reported yet. */
  private readonly due = new Map<string, number>();
  /** Conversation → the highest seq reported (or read): lower ones are not reported again. */
  private readonly reported = new Map<string, number>();
  private readonly inFlight = new Set<string>();
  private cancelTimer: CancelTimer | null = null;

  constructor(
    private readonly clock: Clock,
    private readonly delayMs: number,
    private readonly report: (conversationId: string, seq: number) => Promise<void>,
  ) {}

  /** A message of another user arrived on this device. */
  messageReceived(conversationId: string, seq: number): void {
    if (seq <= Math.max(this.reported.get(conversationId) ?? 0, this.due.get(conversationId) ?? 0)) return;
    this.due.delete(conversationId);
    this.due.set(conversationId, seq);
    forgetOldest(this.due);
    this.schedule();
  }

  /** The position reached `seq` by other means (markRead): nothing up to it needs reporting. */
  positionReached(conversationId: string, seq: number): void {
    remember(this.reported, conversationId, seq);
    if ((this.due.get(conversationId) ?? 0) <= seq) this.due.delete(conversationId);
  }

  /** Stops the timer and forgets what was due (the client closed; a new session receives it again). */
  stop(): void {
    this.cancelTimer?.();
    this.cancelTimer = null;
    this.due.clear();
  }

  private schedule(): void {
    if (this.cancelTimer !== null) return;
    this.cancelTimer = this.clock.setTimer(() => {
      this.cancelTimer = null;
      this.flush();
    }, this.delayMs);
  }

  private flush(): void {
    for (const [conversationId, seq] of [...this.due]) {
      if (this.inFlight.has(conversationId)) continue;
      this.due.delete(conversationId);
      this.inFlight.add(conversationId);
      this.report(conversationId, seq)
        .then(
          () => remember(this.reported, conversationId, seq),
          // Not reported: the next message of the conversation reports a seq at least as high.
          () => undefined,
        )
        .finally(() => {
          this.inFlight.delete(conversationId);
          if (this.due.has(conversationId)) this.schedule();
        });
    }
  }
}

function remember(positions: Map<string, number>, conversationId: string, seq: number): void {
  const highest = Math.max(positions.get(conversationId) ?? 0, seq);
  positions.delete(conversationId);
  positions.set(conversationId, highest);
  forgetOldest(positions);
}

function forgetOldest(positions: Map<string, number>): void {
  for (const oldest of positions.keys()) {
    if (positions.size <= deliveredConversationsMax) return;
    positions.delete(oldest);
  }
}
