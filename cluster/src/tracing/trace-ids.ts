// Trace ids without OpenTelemetry (docs/decisions/0037): with tracing off, the edge still gives each
// request it sends to a cell, but a send, a W3C trace context, so every process's log lines about that
// request carry one `traceId`; a send's id is derived from the send instead (sendTraceId). The value
// travels in the `traceparent` header the tracing path uses (flags 00: not sampled), so a process with
// tracing on continues it as a parent. Made without crypto per request: a random per-process prefix and a
// counter, a few string operations; nothing here imports OpenTelemetry.
import { createHash, randomBytes } from "node:crypto";
import type { LogFields } from "../log-lines.ts";

/** The NATS header (and W3C name) that carries a request's trace context. */
export const traceparentHeader = "traceparent";

/**
 * Makes `traceparent` values `00-<prefix><counter>-<counter>-00`: the trace id is 8 random bytes of the
 * process (hex) then the counter (16 hex), the span id the counter; the counter starts at 1, so neither
 * is ever all zeros, and two processes collide only if their random prefixes do.
 */
export class TraceIds {
  private readonly prefix: string;
  private counter = 0;

  /** `random` gives `size` random bytes; tests pass a fixed one. */
  constructor(random: (size: number) => Uint8Array = randomBytes) {
    this.prefix = Buffer.from(random(8)).toString("hex").padStart(16, "0").slice(0, 16);
  }

  /** A new traceparent value for one request. */
  next(): string {
    this.counter += 1;
    const spanId = this.counter.toString(16).padStart(16, "0");
    return `00-${this.prefix}${spanId}-${spanId}-00`;
  }
}

const traceparentPattern = /^00-([0-9a-f]{32})-([0-9a-f]{16})-[0-9a-f]{2}$/;
const zeroTraceId = "0".repeat(32);
const zeroSpanId = "0".repeat(16);

/**
 * The trace id of a `traceparent` value (version 00, W3C), or undefined when it is absent or malformed:
 * values come from the network, and a bad one only costs the log lines their traceId.
 */
export function traceIdOf(traceparent: string | undefined): string | undefined {
  if (traceparent === undefined || traceparent.length !== 55) return undefined;
  const match = traceparentPattern.exec(traceparent);
  if (match === null) return undefined;
  const traceId = match[1];
  if (traceId === undefined || traceId === zeroTraceId || match[2] === zeroSpanId) return undefined;
  return traceId;
}

/**
 * The fields naming the requests a line is about: `{ traceId }` for one, `{ traceIds: "<id>,<id>,…" }`
 * (distinct, in order) for a batch of several, nothing for none. A string, not an array: a grep for one
 * id finds the batch's line either way, and LogFields stay scalars.
 */
export function traceIdFields(traceIds: Iterable<string | undefined>): LogFields | undefined {
  const distinct = new Set<string>();
  for (const traceId of traceIds) if (traceId !== undefined) distinct.add(traceId);
  if (distinct.size === 0) return undefined;
  if (distinct.size === 1) for (const traceId of distinct) return { traceId };
  return { traceIds: [...distinct].join(",") };
}

/** The fields that name one send for good: the same at its edge, its worker, every recipient edge and on a retry. */
export type SendIdentity = {
  readonly senderUserId: string;
  readonly senderDeviceId: string;
  readonly conversationId: string;
  readonly clientMessageId: string;
};

/**
 * A send's trace id with tracing off (docs/decisions/0037): derived from its identity instead of carried,
 * so its edge, its worker and the recipient edges each compute the same id from what they already hold,
 * and only when a line is written; the message path carries and computes nothing for it. The first 32
 * hex of the SHA-256 of the four fields: a W3C-shaped trace id, the same for a retry of the send (which is
 * the same send: it dedupes on clientMessageId), and not a user id in clear.
 */
export function sendTraceId(send: SendIdentity): string {
  return createHash("sha256")
    .update(`${send.senderUserId}\n${send.senderDeviceId}\n${send.conversationId}\n${send.clientMessageId}`)
    .digest("hex")
    .slice(0, 32);
}
