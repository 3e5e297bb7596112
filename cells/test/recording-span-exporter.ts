// For tests that look at the spans a worker part makes: an OpenTelemetry-backed Tracing whose spans go to
// memory instead of an OTLP endpoint. The exporter's types are taken from createOtelTracing's options, so
// cells needs no OpenTelemetry package of its own.
import { createOtelTracing, type OtelTracing, type OtelTracingOptions } from "@cellwire/cluster/otel-tracing";

type SpanExporter = NonNullable<OtelTracingOptions["spanExporter"]>;
export type ExportedSpan = Parameters<SpanExporter["export"]>[0][number];

class RecordingSpanExporter implements SpanExporter {
  readonly spans: ExportedSpan[] = [];
  export(spans: ExportedSpan[], done: Parameters<SpanExporter["export"]>[1]): void {
    this.spans.push(...spans);
    done({ code: 0 });
  }
  shutdown(): Promise<void> {
    return Promise.resolve();
  }
}

/** A Tracing for one test file, and the spans it ended so far (after `flush`). */
export function recordingTracing(): { readonly tracing: OtelTracing; readonly spans: ExportedSpan[] } {
  const exporter = new RecordingSpanExporter();
  const tracing = createOtelTracing({
    otlpEndpoint: "http://127.0.0.1:1",
    serviceName: "cellwire-worker",
    processName: "test",
    spanExporter: exporter,
  });
  return { tracing, spans: exporter.spans };
}
