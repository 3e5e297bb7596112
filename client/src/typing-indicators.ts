// The typing indicators a device shows: each `typing` frame starts (or refreshes) one indicator per
// (conversation, user, device), which stops by itself expiresInMs later unless a newer frame refreshes
// it. The edge sends no stop frame; this module is what makes indicators lapse. The clock is injected.
import type { CancelTimer, Clock } from "./clock.ts";

/** Someone is typing: show it until expiresAtMs (the client's clock) unless refreshed. */
export type TypingIndicator = {
  readonly conversationId: string;
  readonly userId: string;
  readonly deviceId: string;
  readonly expiresInMs: number;
  readonly expiresAtMs: number;
};
/** An indicator lapsed (or the client closed): stop showing it. */
export type TypingStopped = { readonly conversationId: string; readonly userId: string; readonly deviceId: string };

/** Indicators shown at once; past it the oldest one is stopped early. */
export const typingIndicatorsMax = 1000;

type Active = { readonly stopped: TypingStopped; readonly cancel: CancelTimer };

export class TypingIndicators {
  /** Map order is start order: the first entry is the oldest indicator. */
  private readonly active = new Map<string, Active>();

  constructor(
    private readonly clock: Clock,
    private readonly onStarted: (indicator: TypingIndicator) => void,
    private readonly onStopped: (stopped: TypingStopped) => void,
    private readonly indicatorsMax = typingIndicatorsMax,
  ) {}

  get activeCount(): number {
    return this.active.size;
  }

  /** A `typing` frame arrived: start or refresh its indicator, then emit it. */
  received(frame: {
    readonly conversationId: string;
    readonly userId: string;
    readonly deviceId: string;
    readonly expiresInMs: number;
  }): void {
    const { conversationId, userId, deviceId, expiresInMs } = frame;
    // Ids never contain a space (protocol allowlists), so the key is unambiguous.
    const key = `${conversationId} ${userId} ${deviceId}`;
    this.active.get(key)?.cancel();
    this.active.delete(key);
    while (this.active.size >= this.indicatorsMax) {
      const oldest = this.active.keys().next().value;
      if (oldest === undefined) break;
      this.stop(oldest);
    }
    const stopped: TypingStopped = { conversationId, userId, deviceId };
    const cancel = this.clock.setTimer(() => {
      if (this.active.get(key)?.cancel !== cancel) return;
      this.active.delete(key);
      this.onStopped(stopped);
    }, expiresInMs);
    this.active.set(key, { stopped, cancel });
    this.onStarted({ conversationId, userId, deviceId, expiresInMs, expiresAtMs: this.clock.nowMs() + expiresInMs });
  }

  /** Stops every indicator now (the client closed). */
  stopAll(): void {
    for (const key of [...this.active.keys()]) this.stop(key);
  }

  private stop(key: string): void {
    const entry = this.active.get(key);
    if (entry === undefined) return;
    entry.cancel();
    this.active.delete(key);
    this.onStopped(entry.stopped);
  }
}
