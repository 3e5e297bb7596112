// The tracing facade: settings, the off path (nothing installed, nothing loaded: see also
// cli/src/tracing-off.test.ts for the module graph), and the OpenTelemetry-backed Tracing it loads.
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { InMemorySpanExporter, type ReadableSpan } from "@opentelemetry/sdk-trace-node";
import { afterAll, afterEach, describe, expect, it } from "vitest";
import { ConfigError } from "../errors.ts";
import { createOtelTracing } from "./otel-tracing.ts";
import {
  activeTraceId,
  activeTracing,
  installTracing,
  readTracingConfig,
  startTracing,
  tracingField,
  type TraceContext,
} from "./tracing.ts";

afterEach(() => installTracing(undefined));

// A collector that takes every export and keeps nothing: shutdown exports what the tests ended.
const collector = createServer((request, response) => {
  request.resume();
  request.on("end", () => response.writeHead(200, { "content-type": "application/json" }).end("{}"));
});
await new Promise<void>((resolve) => collector.listen(0, "127.0.0.1", resolve));
const { port } = collector.address() as AddressInfo;
const tracing = createOtelTracing({ otlpEndpoint: `http://127.0.0.1:${port}/`, serviceName: "cellwire-test", processName: "test" });

describe("readTracingConfig", () => {
  it("is off without OTEL_EXPORTER_OTLP_ENDPOINT (or with it empty)", () => {
    expect(readTracingConfig({})).toBeUndefined();
    expect(readTracingConfig({ OTEL_EXPORTER_OTLP_ENDPOINT: " ", OTEL_SERVICE_NAME: "edge-eu" })).toBeUndefined();
  });

  it("reads the endpoint and the service name", () => {
    expect(readTracingConfig({ OTEL_EXPORTER_OTLP_ENDPOINT: "http://collector:4318", OTEL_SERVICE_NAME: "edge-eu" })).toEqual({
      otlpEndpoint: "http://collector:4318",
      serviceName: "edge-eu",
    });
  });

  it("gives a service config a tracing field only when tracing is on", () => {
    expect(tracingField({})).toEqual({});
    expect(tracingField({ OTEL_EXPORTER_OTLP_ENDPOINT: "https://collector" })).toEqual({ tracing: { otlpEndpoint: "https://collector" } });
  });

  it("refuses an endpoint that is not an http(s) URL", () => {
    expect(() => readTracingConfig({ OTEL_EXPORTER_OTLP_ENDPOINT: "collector:4318" })).toThrow(ConfigError);
    expect(() => readTracingConfig({ OTEL_EXPORTER_OTLP_ENDPOINT: "not a url" })).toThrow(ConfigError);
  });
});

describe("startTracing", () => {
  it("without an endpoint returns undefined and installs nothing", async () => {
    expect(await startTracing(undefined, "cellwire-edge", "cellwire-edge-1")).toBeUndefined();
    expect(activeTracing()).toBeUndefined();
  });
});

describe("the OpenTelemetry-backed Tracing", () => {
  it("keeps the span of inSpan active across the awaits of its work, and none outside it", async () => {
    expect(tracing.activeContext()).toBeUndefined();
    let inside: TraceContext | undefined;
    let afterAwait: TraceContext | undefined;
    await tracing.inSpan("outer", {}, async () => {
      inside = tracing.activeContext();
      await new Promise((resolve) => setImmediate(resolve));
      afterAwait = tracing.activeContext();
    });
    expect(inside?.traceId).toMatch(/^[0-9a-f]{32}$/);
    expect(afterAwait).toEqual(inside);
    expect(tracing.activeContext()).toBeUndefined();
  });

  it("carries a batch's contexts through NATS headers in item order, and a request's one", () => {
    const first = tracing.contextOf(tracing.startSpan("first", {}));
    const third = tracing.contextOf(tracing.startSpan("third", {}));
    expect(tracing.headersForEach([undefined, undefined])).toBeUndefined();
    const batch = tracing.headersForEach([first, undefined, third]);
    const extracted = tracing.extractEach(batch, 3);
    expect(extracted.map((context) => context?.spanId)).toEqual([first.spanId, undefined, third.spanId]);
    expect(extracted[0]?.traceId).toBe(first.traceId);
    expect(tracing.extractEach(undefined, 2)).toEqual([undefined, undefined]);
    expect(tracing.extractItem(batch, 2)?.spanId).toBe(third.spanId);
    expect(tracing.extractItem(batch, 1)).toBeUndefined();
    expect(tracing.extract(tracing.headersFor(third))).toMatchObject({ traceId: third.traceId, spanId: third.spanId });
    expect(tracing.extract(undefined)).toBeUndefined();
  });

  it("names the active span's trace id for log lines only while installed and inside a span", async () => {
    await tracing.inSpan("request", {}, async () => {
      expect(activeTraceId()).toBeUndefined();
      installTracing(tracing);
      expect(activeTraceId()).toBe(tracing.activeContext()?.traceId);
    });
    expect(activeTraceId()).toBeUndefined();
  });

  it("runs inLinkedSpan's work in a new trace of its own, whatever span was active before", async () => {
    const linked = tracing.contextOf(tracing.startSpan("a send", {}));
    await tracing.inSpan("an unrelated request", {}, async () => {
      const outer = tracing.activeContext();
      const inside = await tracing.inLinkedSpan("worker.relay", {}, [linked, undefined], async () => tracing.activeContext());
      expect(inside?.traceId).not.toBe(outer?.traceId);
      expect(inside?.traceId).not.toBe(linked.traceId);
      expect(tracing.activeContext()).toEqual(outer);
    });
  });

  it("makes a remote context the parent of inSpanOf's span", async () => {
    const remote = tracing.contextOf(tracing.startSpan("remote", {}));
    const child = await tracing.inSpanOf("child", {}, remote, async () => tracing.activeContext());
    expect(child?.traceId).toBe(remote.traceId);
    expect(child?.spanId).not.toBe(remote.spanId);
  });

  afterAll(async () => {
    await tracing.shutdown();
    await new Promise<void>((resolve) => collector.close(() => resolve()));
  });
});

describe("span times", () => {
  const exporter = new InMemorySpanExporter();
  const recorded = createOtelTracing({
    otlpEndpoint: "http://127.0.0.1:1",
    serviceName: "cellwire-test",
    processName: "test",
    spanExporter: exporter,
  });
  afterAll(() => recorded.shutdown());

  const millisecondsOf = ([seconds, nanoseconds]: readonly [number, number]): number => seconds * 1000 + nanoseconds / 1e6;
  /** Waits, busy, until `ms` went by on the clock the spans use. */
  const spin = (ms: number): void => {
    const until = recorded.now() + ms;
    while (recorded.now() < until);
  };
  const spansNamed = async (name: string): Promise<ReadableSpan[]> => {
    await recorded.flush();
    return exporter.getFinishedSpans().filter((span) => span.name === name);
  };

  // Hops at low load take a fraction of a millisecond: a span started at a whole millisecond (the SDK's
  // Date.now()) would place two spans 0.2 ms apart at the same millisecond or one apart.
  it("starts every kind of span to within a fraction of a millisecond, on the clock its end is on", async () => {
    const gapMs = 0.2;
    for (let round = 0; round < 10; round++) {
      const first = recorded.startSpan("started", {});
      spin(gapMs);
      const second = recorded.startSpan("started", {});
      spin(gapMs);
      recorded.endSpan(first);
      recorded.endSpan(second);
      await recorded.inSpan("active", {}, async () => spin(gapMs));
      spin(gapMs);
      await recorded.inSpan("active", {}, async () => spin(gapMs));
    }
    const started = await spansNamed("started");
    const active = await spansNamed("active");
    expect(started).toHaveLength(20);
    expect(active).toHaveLength(20);
    for (let round = 0; round < 10; round++) {
      const [first, second] = [started[2 * round], started[2 * round + 1]];
      if (first === undefined || second === undefined) throw new Error("a span is missing");
      // The exporter lists spans in the order they ended, the first of a round first.
      const startGapMs = millisecondsOf(second.startTime) - millisecondsOf(first.startTime);
      expect(startGapMs).toBeGreaterThanOrEqual(gapMs);
      expect(startGapMs).toBeLessThan(gapMs + 5);
      // Each span's own duration is what passed between its start and its end.
      expect(millisecondsOf(first.endTime) - millisecondsOf(first.startTime)).toBeGreaterThanOrEqual(2 * gapMs);
      const [before, after] = [active[2 * round], active[2 * round + 1]];
      if (before === undefined || after === undefined) throw new Error("a span is missing");
      const betweenMs = millisecondsOf(after.startTime) - millisecondsOf(before.endTime);
      expect(betweenMs).toBeGreaterThanOrEqual(gapMs);
      expect(betweenMs).toBeLessThan(gapMs + 5);
    }
  });
});
