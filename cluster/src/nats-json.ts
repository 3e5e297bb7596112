// JSON over NATS: encoding, decoding against a protocol decoder, and requests with a deadline whose
// failures come back as typed errors.
import { RequestError, TimeoutError, NoRespondersError, type NatsConnection, type Msg } from "@nats-io/transport-node";
import { decodeJsonText, type Decoder } from "@cellwire/protocol";
import { BadPayloadError, UnavailableError } from "./errors.ts";

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
): Promise<T> {
  let reply: Msg;
  try {
    reply = await connection.request(subject, encodeJson(payload), { timeout: timeoutMs });
  } catch (error) {
    const why = isNoResponders(error) ? "no responders" : isTimeout(error) ? `no reply within ${timeoutMs} ms` : "request failed";
    throw new UnavailableError(unavailableCode, `${subject}: ${why}`, { cause: error });
  }
  const decoded = decodeMessage(replyDecoder, reply.data);
  if (!decoded.ok) throw new BadPayloadError(`reply on ${subject} does not decode: ${decoded.reason}`);
  return decoded.value;
}
