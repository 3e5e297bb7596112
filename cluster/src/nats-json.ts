// JSON over NATS: encoding, decoding against a protocol decoder, and requests with a deadline whose
// failures come back as typed errors (over the connection's RequestMux).
import { RequestError, TimeoutError, NoRespondersError, type MsgHdrs, type NatsConnection } from "@nats-io/transport-node";
import { decodeJsonText, type Decoder } from "@cellwire/protocol";
import { BadPayloadError, UnavailableError } from "./errors.ts";
import { RequestMux, type RequestFailure } from "./request-mux.ts";
import { traceparentHeaders } from "./tracing/nats-trace-headers.ts";
import { activeTracing } from "./tracing/tracing.ts";

const encoder = new TextEncoder();
const decoder = new TextDecoder();

export function encodeJson(value: unknown): Uint8Array {
  return encoder.encode(JSON.stringify(value));
}

export function decodeMessage<T>(payloadDecoder: Decoder<T>, data: Uint8Array): { ok: true; value: T } | { ok: false; reason: string } {
  const result = decodeJsonText(payloadDecoder, decoder.decode(data));
  return result.ok ? { ok: true, value: result.value } : { ok: false, reason: `${result.failure.path} ${result.failure.reason}` };
}

export function isNoResponders(error: unknown): boolean {
  if (error instanceof NoRespondersError) return true;
  if (error instanceof RequestError) return error.isNoResponders();
  return false;
}

export function isTimeout(error: unknown): boolean {
  if (error instanceof TimeoutError) return true;
  return error instanceof Error && error.cause instanceof TimeoutError;
}

/**
 * Sends one request and decodes the reply. Throws UnavailableError when nobody answers in time or nobody
 * listens, BadPayloadError when the reply does not decode.
 */
export async function requestJson<T>(
  connection: NatsConnection,
  subject: string,
  payload: unknown,
  replyDecoder: Decoder<T>,
  timeoutMs: number,
  unavailableCode: "cell_unavailable" | "directory_unavailable",
  /** With tracing off: the request's own traceparent (docs/decisions/0037), carried in the same header. */
  traceparent?: string,
): Promise<T> {
  // The active span's context (an edge's frame, a worker's request) goes with the request when tracing is
  // on; with it off, the caller's traceparent, if it has one.
  const tracing = activeTracing();
  let headers: MsgHdrs | undefined;
  if (tracing !== undefined) {
    const traceContext = tracing.activeContext();
    if (traceContext !== undefined) headers = tracing.headersFor(traceContext);
  } else if (traceparent !== undefined) headers = traceparentHeaders(traceparent);
  const outcome = await RequestMux.of(connection).request(subject, JSON.stringify(payload), timeoutMs, headers);
  if (!outcome.ok) throw new UnavailableError(unavailableCode, `${subject}: ${describeFailure(outcome.reason, timeoutMs)}`);
  const decoded = decodeMessage(replyDecoder, outcome.data);
  if (!decoded.ok) throw new BadPayloadError(`reply on ${subject} does not decode: ${decoded.reason}`);
  return decoded.value;
}

/** Why a request got no reply, for error messages. */
export function describeFailure(reason: RequestFailure, timeoutMs: number): string {
  switch (reason) {
    case "no_responders":
      return "no responders";
    case "timeout":
      return `no reply within ${timeoutMs} ms`;
    case "closed":
      return "the connection is closed";
    case "disconnected":
      return "the connection to NATS dropped before the reply came";
  }
}
