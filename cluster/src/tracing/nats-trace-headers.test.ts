// The NATS header carriers of the W3C trace context, driven by OpenTelemetry's own W3C propagator.
import { headers } from "@nats-io/transport-node";
import { ROOT_CONTEXT, trace, TraceFlags, type SpanContext } from "@opentelemetry/api";
import { TraceState, W3CTraceContextPropagator } from "@opentelemetry/core";
import { describe, expect, it } from "vitest";
import {
  absentTraceValue,
  batchItemGetter,
  batchItemSetter,
  natsHeadersGetter,
  natsHeadersSetter,
  traceparentHeaders,
  traceparentOf,
} from "./nats-trace-headers.ts";

const propagator = new W3CTraceContextPropagator();

function spanContext(byte: string, traceState?: string): SpanContext {
  return {
    traceId: byte.repeat(32),
    spanId: byte.repeat(16),
    traceFlags: TraceFlags.SAMPLED,
    ...(traceState === undefined ? {} : { traceState: new TraceState(traceState) }),
  };
}

const asContext = (context: SpanContext) => trace.setSpanContext(ROOT_CONTEXT, context);

describe("natsHeadersSetter and natsHeadersGetter", () => {
  it("carry one context as the W3C traceparent and tracestate headers, and read it back", () => {
    const carrier = headers();
    propagator.inject(asContext(spanContext("a", "vendor=1")), carrier, natsHeadersSetter);
    expect(carrier.get("traceparent")).toBe(`00-${"a".repeat(32)}-${"a".repeat(16)}-01`);
    expect(carrier.get("tracestate")).toBe("vendor=1");
    const extracted = trace.getSpanContext(propagator.extract(ROOT_CONTEXT, carrier, natsHeadersGetter));
    expect(extracted).toMatchObject({ traceId: "a".repeat(32), spanId: "a".repeat(16), traceFlags: 1, isRemote: true });
    expect(extracted?.traceState?.get("vendor")).toBe("1");
  });

  it("read nothing from headers without a trace context, or with the placeholder", () => {
    const carrier = headers();
    carrier.set("other", "x");
    expect(trace.getSpanContext(propagator.extract(ROOT_CONTEXT, carrier, natsHeadersGetter))).toBeUndefined();
    carrier.set("traceparent", absentTraceValue);
    expect(natsHeadersGetter.get(carrier, "traceparent")).toBeUndefined();
    expect(natsHeadersGetter.keys(carrier)).toEqual(["other", "traceparent"]);
  });
});

describe("batchItemSetter and batchItemGetter", () => {
  it("keep one context per item in item order, a placeholder where an item has none", () => {
    const carrier = headers();
    const items = [spanContext("1"), undefined, spanContext("3", "vendor=3"), undefined];
    items.forEach((item, index) => {
      if (item !== undefined) propagator.inject(asContext(item), { headers: carrier, index }, batchItemSetter);
    });
    expect(carrier.values("traceparent")).toEqual([
      `00-${"1".repeat(32)}-${"1".repeat(16)}-01`,
      absentTraceValue,
      `00-${"3".repeat(32)}-${"3".repeat(16)}-01`,
    ]);
    // Only the third item has a tracestate: the first two hold the placeholder, so the values stay aligned.
    expect(carrier.values("tracestate")).toEqual([absentTraceValue, absentTraceValue, "vendor=3"]);
    const extracted = items.map((_, index) =>
      trace.getSpanContext(propagator.extract(ROOT_CONTEXT, { headers: carrier, index }, batchItemGetter)),
    );
    expect(extracted.map((context) => context?.spanId)).toEqual(["1".repeat(16), undefined, "3".repeat(16), undefined]);
    expect(extracted[0]?.traceState).toBeUndefined();
    expect(extracted[2]?.traceState?.get("vendor")).toBe("3");
  });
});

describe("the traceparent headers of tracing off (docs/decisions/0037)", () => {
  const value = (digit: string): string => `00-${digit.repeat(32)}-${digit.repeat(16)}-00`;

  it("carry one request's value, which the tracing path reads as a parent that is not sampled", () => {
    const carrier = traceparentHeaders(value("a"));
    expect(traceparentOf(carrier)).toBe(value("a"));
    const extracted = trace.getSpanContext(propagator.extract(ROOT_CONTEXT, carrier, natsHeadersGetter));
    expect(extracted).toMatchObject({ traceId: "a".repeat(32), spanId: "a".repeat(16), traceFlags: TraceFlags.NONE, isRemote: true });
  });

  it("read nothing from a message without headers, without the header, or with the placeholder", () => {
    expect(traceparentOf(undefined)).toBeUndefined();
    const carrier = headers();
    carrier.set("other", "x");
    expect(traceparentOf(carrier)).toBeUndefined();
    carrier.set("traceparent", absentTraceValue);
    expect(traceparentOf(carrier)).toBeUndefined();
  });
});
