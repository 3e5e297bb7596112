// The Tracing of a process that exports spans: the OpenTelemetry Node SDK (a NodeTracerProvider with a
// BatchSpanProcessor and the OTLP/HTTP exporter, JSON), the W3C trace context propagator, and the NATS
// header carriers. Loaded only by startTracing (tracing.ts), with `await import`, when an endpoint is
// set: importing this module is what loads OpenTelemetry.
import {
  context,
  ROOT_CONTEXT,
  SpanKind,
  SpanStatusCode,
  trace,
  type Attributes,
  type Context,
  type Link,
  type Tracer,
} from "@opentelemetry/api";
import { W3CTraceContextPropagator } from "@opentelemetry/core";
import { OTLPTraceExporter } from "@opentelemetry/exporter-trace-otlp-http";
import { resourceFromAttributes } from "@opentelemetry/resources";
import { BatchSpanProcessor, NodeTracerProvider, type SpanExporter } from "@opentelemetry/sdk-trace-node";
import { headers as natsHeaders, type MsgHdrs } from "@nats-io/transport-node";
import { batchItemGetter, batchItemSetter, natsHeadersGetter, natsHeadersSetter } from "./nats-trace-headers.ts";
import type { TraceContext, TraceSpan, Tracing } from "./tracing-api.ts";

export type OtelTracingOptions = {
  readonly otlpEndpoint: string;
  readonly serviceName: string;
  /** The process title (cellwire-worker-a-1): the resource's service.instance.id. */
  readonly processName: string;
  /** Where spans go instead of the OTLP endpoint (tests: an InMemorySpanExporter). */
  readonly spanExporter?: SpanExporter;
};

/** A Tracing whose buffered spans a test can push to its exporter. */
export type OtelTracing = Tracing & { flush(): Promise<void> };

const traceparentHeader = "traceparent";

/**
 * Milliseconds since the epoch, with a fraction (OpenTelemetry takes such a number as a time). Every span
 * starts and ends on it: the SDK would start a span at `Date.now()`, a whole millisecond, and end it that
 * span's exact duration later, so two spans of one send, in one process or two, would be placed up to a
 * millisecond apart from where they happened, more than a hop takes at low load. This clock is the
 * monotonic one from the process's start on, so processes started before a step of the wall clock
 * disagree by that step; NTP slews, and rarely steps, a server's clock.
 */
function now(): number {
  return performance.timeOrigin + performance.now();
}

export function createOtelTracing(options: OtelTracingOptions): OtelTracing {
  const exporter = options.spanExporter ?? new OTLPTraceExporter({ url: `${options.otlpEndpoint.replace(/\/+$/, "")}/v1/traces` });
  const provider = new NodeTracerProvider({
    resource: resourceFromAttributes({ "service.name": options.serviceName, "service.instance.id": options.processName }),
    spanProcessors: [new BatchSpanProcessor(exporter)],
  });
  // Installs the AsyncLocalStorage context manager: the active span follows the awaits of a request, so
  // the routers and batchers below the edge's frame handling find it without a parameter.
  provider.register();
  const tracer = provider.getTracer("cellwire");
  const propagator = new W3CTraceContextPropagator();

  return {
    inSpan: (name, attributes, work, failure) => inSpanWithin(tracer, name, attributes, context.active(), work, failure),
    inSpanOf: (name, attributes, parent, work, failure) =>
      inSpanWithin(
        tracer,
        name,
        attributes,
        parent === undefined ? ROOT_CONTEXT : trace.setSpanContext(ROOT_CONTEXT, parent),
        work,
        failure,
      ),
    inLinkedSpan: (name, attributes, links, work) => inSpanWithin(tracer, name, attributes, ROOT_CONTEXT, work, undefined, linksOf(links)),
    activeContext() {
      const spanContext = trace.getSpan(context.active())?.spanContext();
      return spanContext !== undefined && trace.isSpanContextValid(spanContext) ? spanContext : undefined;
    },
    startSpan(name, attributes, parent, links = []) {
      const parentContext = parent === undefined ? ROOT_CONTEXT : trace.setSpanContext(ROOT_CONTEXT, parent);
      return tracer.startSpan(name, { attributes, links: linksOf(links), startTime: now() }, parentContext);
    },
    recordSpan(name, attributes, startTimeMs, links) {
      // Both ends on the same clock (now()), not the start on ours and the end on the SDK's.
      tracer.startSpan(name, { attributes, links: linksOf(links), startTime: startTimeMs }, ROOT_CONTEXT).end(now());
    },
    endSpan(span, failure) {
      if (failure !== undefined) fail(span, failure);
      span.end(now());
    },
    contextOf: (span) => span.spanContext(),
    now,
    headersFor(spanContext) {
      const carrier = natsHeaders();
      propagator.inject(trace.setSpanContext(ROOT_CONTEXT, spanContext), carrier, natsHeadersSetter);
      return carrier;
    },
    headersForEach(contexts) {
      let carrier: MsgHdrs | undefined;
      contexts.forEach((itemContext, index) => {
        if (itemContext === undefined) return;
        carrier ??= natsHeaders();
        propagator.inject(trace.setSpanContext(ROOT_CONTEXT, itemContext), { headers: carrier, index }, batchItemSetter);
      });
      return carrier;
    },
    extract(carrier) {
      if (carrier === undefined || !carrier.has(traceparentHeader)) return undefined;
      return validSpanContext(propagator.extract(ROOT_CONTEXT, carrier, natsHeadersGetter));
    },
    extractItem(carrier, index) {
      if (carrier === undefined || !carrier.has(traceparentHeader)) return undefined;
      return validSpanContext(propagator.extract(ROOT_CONTEXT, { headers: carrier, index }, batchItemGetter));
    },
    extractEach(carrier, count) {
      const contexts = new Array<TraceContext | undefined>(count).fill(undefined);
      if (carrier === undefined || !carrier.has(traceparentHeader)) return contexts;
      for (let index = 0; index < count; index++)
        contexts[index] = validSpanContext(propagator.extract(ROOT_CONTEXT, { headers: carrier, index }, batchItemGetter));
      return contexts;
    },
    shutdown: () => provider.shutdown(),
    flush: () => provider.forceFlush(),
  };
}

function linksOf(contexts: readonly (TraceContext | undefined)[]): Link[] {
  const links: Link[] = [];
  for (const linked of contexts) if (linked !== undefined) links.push({ context: linked });
  return links;
}

function fail(span: TraceSpan, failure: string): void {
  span.setStatus({ code: SpanStatusCode.ERROR, message: failure });
}

/** Runs `work` in a span that is active for it, a child of `parentContext`'s span if it has one. */
function inSpanWithin<T>(
  tracer: Tracer,
  name: string,
  attributes: Attributes,
  parentContext: Context,
  work: () => Promise<T>,
  failure: ((result: T) => string | undefined) | undefined,
  links: Link[] = [],
): Promise<T> {
  return tracer.startActiveSpan(name, { attributes, links, kind: SpanKind.SERVER, startTime: now() }, parentContext, async (span) => {
    try {
      const result = await work();
      const failed = failure?.(result);
      if (failed !== undefined) fail(span, failed);
      return result;
    } catch (error) {
      fail(span, error instanceof Error ? error.name : "error");
      throw error;
    } finally {
      span.end(now());
    }
  });
}

/** The context of a valid span context, from what the propagator extracted. */
function validSpanContext(extracted: Context): TraceContext | undefined {
  const spanContext = trace.getSpanContext(extracted);
  return spanContext !== undefined && trace.isSpanContextValid(spanContext) ? spanContext : undefined;
}
