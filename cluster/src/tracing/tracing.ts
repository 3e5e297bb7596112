// Tracing (issue 13 item 3, docs/decisions/0034): one trace per send, from the edge's frame through the
// worker's statement and the fan-out to the recipients' edges, with the W3C trace context in NATS headers.
//
// OpenTelemetry is loaded only when an OTLP endpoint is configured: startTracing imports the SDK then
// (otel-tracing.ts, with `await import`), and nothing else in Cellwire imports an OpenTelemetry module at
// run time (tracing-api.ts and nats-trace-headers.ts import types only). With tracing off,
// activeTracing() returns undefined and each instrumented place costs one branch on it: no header
// objects, no spans, no context propagation.
//
// One Tracing per process, installed by the service's main before the service starts: OpenTelemetry's
// own tracer provider and context manager are process-wide too, and passing it through every
// constructor on the message path (router, batcher, mux, committer, publisher, hub) would change their
// signatures for a setting read once. Tests in process install one and uninstall it.
import type { TraceContext, TraceSpan, Tracing } from "./tracing-api.ts";
import { ConfigError } from "../errors.ts";
import type { Environment } from "../config-kit.ts";
import { traceIdOf } from "./trace-ids.ts";

export type { TraceContext, TraceSpan, Tracing };

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
