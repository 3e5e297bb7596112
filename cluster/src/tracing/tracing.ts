// Tracing (issue 13 item 3, docs/decisions/0034): one trace per send, from the edge's frame through the
// worker's statement and the fan-out to the recipients' edges, with the W3C trace context in NATS headers.
//
// OpenTelemetry is loaded only when an OTLP endpoint is configured: startTracing imports the SDK then
// (otel-tracing.ts, with `await import`), and nothing else in Cellwire imports an OpenTelemetry module at
// run time (this file and nats-trace-headers.ts import types only). With tracing off, activeTracing()
// returns undefined and each instrumented place costs one branch on it: no header objects, no spans, no
// context propagation.
//
// One Tracing per process, installed by the service's main before the service starts: OpenTelemetry's
// own tracer provider and context manager are process-wide too, and passing it through every
// constructor on the message path (router, batcher, mux, committer, publisher, hub) would change their
// signatures for a setting read once. Tests in process install one and uninstall it.
import type { Attributes, Span, SpanContext } from "@opentelemetry/api";
import type { MsgHdrs } from "@nats-io/transport-node";
import { ConfigError } from "../errors.ts";
import type { Environment } from "../config-kit.ts";
import { traceIdOf } from "./trace-ids.ts";

/** A span's identity, as carried between processes and named in links. */
export type TraceContext = SpanContext;
export type TraceSpan = Span;

export interface Tracing {
  /**
   * Runs `work` in a new span, a child of the active span if there is one, made the active span for
   * `work` (and everything it awaits). The span ends when `work` settles; `failure` names the result's
   * error, if it is one (its code or type), for the span's status.
   */
  inSpan<T>(name: string, attributes: Attributes, work: () => Promise<T>, failure?: (result: T) => string | undefined): Promise<T>;
  /** inSpan for a request from another process: the span is a child of `parent` (a root when absent). */
  inSpanOf<T>(
    name: string,
    attributes: Attributes,
    parent: TraceContext | undefined,
    work: () => Promise<T>,
    failure?: (result: T) => string | undefined,
  ): Promise<T>;
  /**
   * inSpan for work done in a batch for many requests (a relay of outbox rows): a root span linked to
   * each of `links` (the absent skipped), active for `work`, never the child of whichever request ran it.
   */
  inLinkedSpan<T>(name: string, attributes: Attributes, links: readonly (TraceContext | undefined)[], work: () => Promise<T>): Promise<T>;
  /** The context of the active span (set by inSpan), if any. */
  activeContext(): TraceContext | undefined;
  /**
   * Starts a span: a child of `parent` (a context from another process) if given, else a root; linked to
   * each of `links` (a batch's items), the absent skipped.
   */
  startSpan(name: string, attributes: Attributes, parent?: TraceContext, links?: readonly (TraceContext | undefined)[]): TraceSpan;
  /** A span that started at `startTimeMs` (from now()) and ends now. */
  recordSpan(name: string, attributes: Attributes, startTimeMs: number, links: readonly TraceContext[]): void;
  /** Ends `span`; `failure` (an error code) marks it as an error. */
  endSpan(span: TraceSpan, failure?: string): void;
  contextOf(span: TraceSpan): TraceContext;
  /** Milliseconds since the epoch, with a fraction: the clock of span times. */
  now(): number;
  /** Headers carrying one context (a request). */
  headersFor(context: TraceContext): MsgHdrs;
  /** Headers carrying one context per item of a batch, in item order; undefined when no item has one. */
  headersForEach(contexts: readonly (TraceContext | undefined)[]): MsgHdrs | undefined;
  /** The context a request carries, if any. */
  extract(headers: MsgHdrs | undefined): TraceContext | undefined;
  /** The context of item `index` of a batch, if it has one. */
  extractItem(headers: MsgHdrs | undefined, index: number): TraceContext | undefined;
  /** The context of each of a batch's `count` items, undefined where an item has none. */
  extractEach(headers: MsgHdrs | undefined, count: number): (TraceContext | undefined)[];
  /** Exports the spans still buffered and stops. */
  shutdown(): Promise<void>;
}

/**
 * OTEL_EXPORTER_OTLP_ENDPOINT and OTEL_SERVICE_NAME, OpenTelemetry's own names (read by each service's
 * config). A service config without one has tracing off.
 */
export type TracingConfig = {
  /** The OTLP/HTTP base URL (spans go to `<endpoint>/v1/traces`, as the OTLP specification says). */
  readonly otlpEndpoint: string;
  /** The resource's service.name; absent: the service's own (cellwire-edge, cellwire-worker, cellwire-directory). */
  readonly serviceName?: string;
};

/**
 * Reads the tracing settings: undefined (off) without an endpoint; ConfigError for an endpoint that is
 * not an http(s) URL.
 */
export function readTracingConfig(environment: Environment): TracingConfig | undefined {
  const endpoint = environment["OTEL_EXPORTER_OTLP_ENDPOINT"]?.trim();
  const serviceName = environment["OTEL_SERVICE_NAME"]?.trim();
  if (endpoint === undefined || endpoint === "") return undefined;
  let url: URL;
  try {
    url = new URL(endpoint);
  } catch {
    throw new ConfigError(`OTEL_EXPORTER_OTLP_ENDPOINT is not a URL: ${endpoint}`);
  }
  if (url.protocol !== "http:" && url.protocol !== "https:") {
    throw new ConfigError(`OTEL_EXPORTER_OTLP_ENDPOINT must be an http or https URL, not ${url.protocol}`);
  }
  return serviceName === undefined || serviceName === "" ? { otlpEndpoint: endpoint } : { otlpEndpoint: endpoint, serviceName };
}

/** The `tracing` field of a service config: present only when tracing is on, so configs without it are off. */
export function tracingField(environment: Environment): { readonly tracing?: TracingConfig } {
  const tracing = readTracingConfig(environment);
  return tracing === undefined ? {} : { tracing };
}

let installed: Tracing | undefined;

/** The process's tracing; undefined when tracing is off (the one branch the message path pays). */
export function activeTracing(): Tracing | undefined {
  return installed;
}

/** The trace id of the active span, for a log line's fields (`{ traceId }`); undefined when off or outside a span. */
export function activeTraceId(): string | undefined {
  return installed?.activeContext()?.traceId;
}

/**
 * The trace id for a line about a request: the active span's with tracing on, else the one its headers
 * carried (`traceparent`, docs/decisions/0037); undefined when neither is there or the value is malformed.
 */
export function requestTraceId(traceparent: string | undefined): string | undefined {
  return activeTraceId() ?? traceIdOf(traceparent);
}

/** Makes `tracing` the process's (undefined: off). Called by a service's main, and by tests. */
export function installTracing(tracing: Tracing | undefined): void {
  installed = tracing;
}

/**
 * Starts tracing when `config` names an endpoint: loads the OpenTelemetry SDK, installs it and returns
 * it (the main shuts it down with the process). Without an endpoint, loads nothing and returns undefined.
 */
export async function startTracing(
  config: TracingConfig | undefined,
  defaultServiceName: string,
  processName: string,
): Promise<Tracing | undefined> {
  if (config === undefined) return undefined;
  const { createOtelTracing } = await import("./otel-tracing.ts");
  const tracing = createOtelTracing({
    otlpEndpoint: config.otlpEndpoint,
    serviceName: config.serviceName ?? defaultServiceName,
    processName,
  });
  installTracing(tracing);
  return tracing;
}
