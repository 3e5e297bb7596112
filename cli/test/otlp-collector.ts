// An OTLP/HTTP trace collector for tests: a node:http server on a free port that takes POST /v1/traces
// in OTLP's JSON encoding (what @opentelemetry/exporter-trace-otlp-http sends), keeps every span, and
// prints a trace as a tree with durations. The body is unknown until read field by field here.
import { createServer, type IncomingMessage, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";

export type CollectedLink = { readonly traceId: string; readonly spanId: string };

export type CollectedSpan = {
  readonly traceId: string;
  readonly spanId: string;
  /** Empty for a root span. */
  readonly parentSpanId: string;
  readonly name: string;
  /** The resource's service.name and service.instance.id (the process title). */
  readonly service: string;
  readonly processName: string;
  readonly startTimeNanos: bigint;
  readonly endTimeNanos: bigint;
  readonly attributes: Readonly<Record<string, string | number | boolean>>;
  readonly links: readonly CollectedLink[];
  /** OTLP status code: 0 unset, 1 ok, 2 error. */
  readonly statusCode: number;
};

export type OtlpCollector = {
  /** The base URL for OTEL_EXPORTER_OTLP_ENDPOINT. */
  readonly endpoint: string;
  readonly spans: readonly CollectedSpan[];
  /** Export requests that did not parse (each a reason); a test expects none. */
  readonly rejected: readonly string[];
  stop(): Promise<void>;
};

const bodyBytesMax = 16 * 1024 * 1024;

export async function startOtlpCollector(): Promise<OtlpCollector> {
  const spans: CollectedSpan[] = [];
  const rejected: string[] = [];
  const server = createServer((request, response) => {
    void receive(request, response, spans, rejected);
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as AddressInfo;
  return {
    endpoint: `http://127.0.0.1:${port}`,
    spans,
    rejected,
    stop: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

async function receive(request: IncomingMessage, response: ServerResponse, spans: CollectedSpan[], rejected: string[]): Promise<void> {
  if (request.method !== "POST" || request.url !== "/v1/traces") {
    response.writeHead(404).end();
    return;
  }
  const chunks: Buffer[] = [];
  let bytes = 0;
  for await (const chunk of request) {
    const buffer = chunk as Buffer;
    bytes += buffer.length;
    if (bytes > bodyBytesMax) {
      response.writeHead(413).end();
      return;
    }
    chunks.push(buffer);
  }
  try {
    if (!String(request.headers["content-type"]).startsWith("application/json"))
      throw new Error(`content-type ${request.headers["content-type"]}`);
    spans.push(...parseExportRequest(JSON.parse(Buffer.concat(chunks).toString("utf8"))));
    response.writeHead(200, { "content-type": "application/json" }).end("{}");
  } catch (error) {
    rejected.push(error instanceof Error ? error.message : String(error));
    response.writeHead(400).end();
  }
}

function record(value: unknown, what: string): Record<string, unknown> {
  if (typeof value !== "object" || value === null || Array.isArray(value)) throw new Error(`${what} is not an object`);
  return value as Record<string, unknown>;
}

function list(value: unknown, what: string): unknown[] {
  if (value === undefined) return [];
  if (!Array.isArray(value)) throw new Error(`${what} is not an array`);
  return value;
}

function text(value: unknown, what: string): string {
  if (typeof value !== "string") throw new Error(`${what} is not a string`);
  return value;
}

/** OTLP JSON writes 64-bit integers as strings (or numbers, which some encoders use). */
function nanos(value: unknown, what: string): bigint {
  if (typeof value === "string" && /^\d+$/.test(value)) return BigInt(value);
  if (typeof value === "number" && Number.isSafeInteger(value)) return BigInt(value);
  throw new Error(`${what} is not a timestamp`);
}

function attributesOf(value: unknown, what: string): Record<string, string | number | boolean> {
  const attributes: Record<string, string | number | boolean> = {};
  for (const [index, item] of list(value, what).entries()) {
    const attribute = record(item, `${what}[${index}]`);
    const key = text(attribute["key"], `${what}[${index}].key`);
    const any = record(attribute["value"], `${what}[${index}].value`);
    const scalar = any["stringValue"] ?? any["boolValue"] ?? any["intValue"] ?? any["doubleValue"];
    if (typeof scalar === "string" || typeof scalar === "number" || typeof scalar === "boolean") attributes[key] = scalar;
  }
  return attributes;
}

export function parseExportRequest(body: unknown): CollectedSpan[] {
  const collected: CollectedSpan[] = [];
  for (const [resourceIndex, resourceItem] of list(record(body, "$")["resourceSpans"], "$.resourceSpans").entries()) {
    const resourceSpans = record(resourceItem, `resourceSpans[${resourceIndex}]`);
    const resource = attributesOf(record(resourceSpans["resource"], "resource")["attributes"], "resource.attributes");
    const service = String(resource["service.name"] ?? "");
    const processName = String(resource["service.instance.id"] ?? "");
    for (const scopeItem of list(resourceSpans["scopeSpans"], "scopeSpans")) {
      for (const [spanIndex, spanItem] of list(record(scopeItem, "scopeSpans[]")["spans"], "spans").entries()) {
        const span = record(spanItem, `spans[${spanIndex}]`);
        const status = span["status"] === undefined ? {} : record(span["status"], "status");
        collected.push({
          traceId: text(span["traceId"], "traceId"),
          spanId: text(span["spanId"], "spanId"),
          parentSpanId: span["parentSpanId"] === undefined ? "" : text(span["parentSpanId"], "parentSpanId"),
          name: text(span["name"], "name"),
          service,
          processName,
          startTimeNanos: nanos(span["startTimeUnixNano"], "startTimeUnixNano"),
          endTimeNanos: nanos(span["endTimeUnixNano"], "endTimeUnixNano"),
          attributes: attributesOf(span["attributes"], "attributes"),
          links: list(span["links"], "links").map((linkItem) => {
            const link = record(linkItem, "link");
            return { traceId: text(link["traceId"], "link.traceId"), spanId: text(link["spanId"], "link.spanId") };
          }),
          statusCode: typeof status["code"] === "number" ? status["code"] : 0,
        });
      }
    }
  }
  return collected;
}

function durationMs(span: CollectedSpan): string {
  return `${(Number(span.endTimeNanos - span.startTimeNanos) / 1e6).toFixed(2)} ms`;
}

function describe(span: CollectedSpan): string {
  const attributes = Object.entries(span.attributes)
    .map(([key, value]) => `${key}=${String(value)}`)
    .join(" ");
  return `${span.name} [${span.processName}] ${durationMs(span)}${attributes === "" ? "" : ` (${attributes})`}${span.statusCode === 2 ? " ERROR" : ""}`;
}

const byStart = (a: CollectedSpan, b: CollectedSpan): number => (a.startTimeNanos < b.startTimeNanos ? -1 : 1);

/**
 * The spans of one trace as a tree, each with its process and duration; under each span, the spans of
 * other traces that link to it (a batch's commit, publish, delivery, relay), marked "linked", with their
 * own children.
 */
export function traceTree(spans: readonly CollectedSpan[], traceId: string): string {
  const inTrace = spans.filter((span) => span.traceId === traceId).sort(byStart);
  const lines = [`trace ${traceId}`];
  const print = (span: CollectedSpan, depth: number, mark: string): void => {
    const elsewhere = span.traceId === traceId ? "" : ` in trace ${span.traceId.slice(0, 8)}…`;
    lines.push(`${"  ".repeat(depth + 1)}${mark}${describe(span)}${elsewhere}`);
    const linking = spans.filter((other) => other.links.some((link) => link.spanId === span.spanId && link.traceId === span.traceId));
    for (const other of linking.sort(byStart)) print(other, depth + 1, "linked: ");
    const children = spans.filter((candidate) => candidate.traceId === span.traceId && candidate.parentSpanId === span.spanId);
    for (const child of children.sort(byStart)) print(child, depth + 1, "");
  };
  const ids = new Set(inTrace.map((span) => span.spanId));
  for (const root of inTrace.filter((span) => span.parentSpanId === "" || !ids.has(span.parentSpanId))) print(root, 0, "");
  return lines.join("\n");
}
