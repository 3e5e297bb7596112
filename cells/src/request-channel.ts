// A worker serves each request kind on one channel subject only (docs/decisions/0015): the NATS
// permissions say who may publish on each channel, so a kind arriving on another channel is refused
// here, at the boundary, before it is decoded or queued. Kinds no request has are left to the decoder.
import { cellRequestChannelOf, type CellErrorReply, type WorkerChannel } from "@cellwire/protocol";
import { cellErrorReply } from "./cell-error-reply.ts";

/** The reply refusing a request of `type` that arrived on `channel`, or undefined when it may be served. */
export function offChannelRefusal(type: unknown, channel: WorkerChannel): CellErrorReply | undefined {
  const expected = cellRequestChannelOf(type);
  if (expected === undefined || expected === channel) return undefined;
  return cellErrorReply({ kind: "bad_payload", reason: `$.type ${String(type)} is served on the ${expected} subject, not on ${channel}` });
}
