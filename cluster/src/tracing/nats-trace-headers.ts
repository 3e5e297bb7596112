// The W3C trace context (traceparent, tracestate) in NATS message headers: the getter and setter the
// W3C propagator reads and writes through. A request carries one context; a batch (cell.sendBatch, a
// delivery.batch) carries one per item, in item order, as repeated values of the same header, so the
// batch's receiver can continue each item's own trace. An item without a context holds a placeholder,
// which the getter reads as absent (and the propagator would refuse anyway): the values stay aligned.
// Types only from @opentelemetry/api: this module loads nothing of OpenTelemetry.
import type { TextMapGetter, TextMapSetter } from "@opentelemetry/api";
import { MsgHdrsImpl, type MsgHdrs } from "@nats-io/transport-node";
import { traceparentHeader } from "./trace-ids.ts";

/** The value of an item that has no trace context. */
export const absentTraceValue = "-";

/** One context in a message's headers. */
export const natsHeadersSetter: TextMapSetter<MsgHdrs> = {
  set(carrier, key, value) {
    carrier.set(key, value);
  },
};

export const natsHeadersGetter: TextMapGetter<MsgHdrs> = {
  keys: (carrier) => carrier.keys(),
  get(carrier, key) {
    if (!carrier.has(key)) return undefined;
    const value = carrier.get(key);
    return value === absentTraceValue ? undefined : value;
  },
};

/** The context of item `index` of a batch, in the batch message's headers. */
export type BatchItemCarrier = { readonly headers: MsgHdrs; readonly index: number };

/**
 * MUST be used for the items in index order: item `index` gets the header's value number `index`; the
 * values of items that set nothing for a key (no tracestate) are filled with the placeholder.
 */
export const batchItemSetter: TextMapSetter<BatchItemCarrier> = {
  set({ headers, index }, key, value) {
    let count = headers.has(key) ? headers.values(key).length : 0;
    for (; count < index; count++) headers.append(key, absentTraceValue);
    headers.append(key, value);
  },
};

export const batchItemGetter: TextMapGetter<BatchItemCarrier> = {
  keys: ({ headers }) => headers.keys(),
  get({ headers, index }, key) {
    if (!headers.has(key)) return undefined;
    const value = headers.values(key)[index];
    return value === undefined || value === absentTraceValue ? undefined : value;
  },
};

// With tracing off (docs/decisions/0037): a request's own traceparent from its edge, in the same header,
// written and read as a plain string (no OpenTelemetry, no context objects). Sends carry none: their trace
// id is derived from the send. Built with MsgHdrsImpl.fromRecord, which takes the value as it is (append()
// checks it for CR and LF and canonicalises the key per call); the value cannot hold either: TraceIds makes it.

/** Headers carrying one request's traceparent. */
export function traceparentHeaders(traceparent: string): MsgHdrs {
  return MsgHdrsImpl.fromRecord({ [traceparentHeader]: [traceparent] });
}

/** A request's traceparent as it came (unchecked: traceIdOf checks it where it is used); undefined without one. */
export function traceparentOf(headers: MsgHdrs | undefined): string | undefined {
  if (headers === undefined || !headers.has(traceparentHeader)) return undefined;
  const value = headers.get(traceparentHeader);
  return value === "" || value === absentTraceValue ? undefined : value;
}
