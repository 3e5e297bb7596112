// The one error class of the SDK: every rejected request and every "error" event carries one.
import type { ErrorCode } from "@cellwire/protocol";

/**
 * Server error codes (protocol/src/codes.ts) plus the client's own:
 * - timeout: no reply within requestTimeoutMs (a send may still have been stored: retry with its clientMessageId);
 * - closed: the client is closed, or was stopped by the server, or the connection dropped while a request
 *   that is not safe to repeat was in flight (its outcome is unknown);
 * - too_many_pending: pendingRequestsMax requests are already waiting for replies;
 * - token_unavailable: the token provider failed or returned something that is not a token;
 * - mailbox_gap (an "error" event only): an event frame skipped mailbox seqs; the client reconnects by
 *   itself and resumes after the last seq it holds;
 * - conversation_gap (an "error" event only): a message frame skipped seqs of its conversation; the client
 *   reconnects by itself and resumes the conversation after the last message it holds.
 * A server code this SDK does not know arrives as "internal" with the server's `retryable`.
 */
export type CellwireClientErrorCode =
  ErrorCode | "timeout" | "closed" | "too_many_pending" | "token_unavailable" | "mailbox_gap" | "conversation_gap";

export class CellwireClientError extends Error {
  override readonly name = "CellwireClientError";
  readonly code: CellwireClientErrorCode;
  /** Whether the same request may succeed if made again unchanged (sends: with the same clientMessageId). */
  readonly retryable: boolean;
  /**
   * How long the edge asked the client to wait before trying again (an `overloaded` reply sets it): the
   * SDK honours it when it retries by itself; a caller retrying a rejected request should too.
   */
  readonly retryAfterMs: number | undefined;

  constructor(
    code: CellwireClientErrorCode,
    message: string,
    options: { readonly retryable: boolean; readonly cause?: unknown; readonly retryAfterMs?: number | undefined },
  ) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.code = code;
    this.retryable = options.retryable;
    this.retryAfterMs = options.retryAfterMs;
  }
}
