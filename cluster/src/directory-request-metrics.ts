// What a DirectoryClient's requests cost its process (issue 13, item 1): edges and workers pass an
// observer at construction, and the client tells it of each request's end in one place (its send). The
// directory measures its side (cellwire_directory_request_seconds); this is the requester's, NATS and
// timeouts included, labelled by the same operation names.
//
// A lookup on a cache miss is on the message path (a relay's recipient, a session's conversation), so the
// metrics are a PlainHistogram and a PlainCounter with a cell per operation bound at construction.
import { directoryRequestTypes, type DirectoryRequest } from "@cellwire/protocol";
import type { Registry } from "prom-client";
import { PlainCounter, type CounterCell } from "./plain-counter.ts";
import { PlainHistogram, type HistogramCell } from "./plain-histogram.ts";
import { internalLatencyBucketsSeconds, metricPrefix } from "./service-metrics.ts";

/** Told of each directory request's end; `failed` when it got no answer or an error one (see DirectoryClient). */
export interface DirectoryRequestObserver {
  requestEnded(operation: DirectoryRequest["type"], elapsedMs: number, failed: boolean): void;
}

/** What a DirectoryClient times its requests with: the observer, and the monotonic clock it reads. */
export type DirectoryRequestTiming = {
  readonly observer: DirectoryRequestObserver;
  readonly monotonicNowMs: () => number;
};

/** The `operation` label of a request type: without its `directory.` prefix, as the directory labels its own. */
export function directoryOperationLabel(type: string): string {
  return type.startsWith("directory.") ? type.slice("directory.".length) : type;
}

type OperationCells = { readonly seconds: HistogramCell; readonly errors: CounterCell };

/**
 * `cellwire_<service>_directory_request_seconds{operation}` and
 * `cellwire_<service>_directory_request_errors_total{operation}` in `registry`, every operation's cells
 * bound now (each series shows from the first scrape), as an observer.
 */
export function createDirectoryRequestMetrics(registry: Registry, service: "edge" | "worker"): DirectoryRequestObserver {
  const prefix = `${metricPrefix}${service}_directory_request_`;
  const seconds = new PlainHistogram({
    name: `${prefix}seconds`,
    help: `The ${service}'s requests to the directory over NATS, from sending to the answer or the timeout, by operation.`,
    labelName: "operation",
    buckets: internalLatencyBucketsSeconds,
    registry,
  });
  const errors = new PlainCounter({
    name: `${prefix}errors_total`,
    help: `The ${service}'s directory requests that failed (no answer, or a directory.error other than a lookup's not_found), by operation.`,
    labelNames: ["operation"],
    registry,
  });
  const byOperation = new Map<string, OperationCells>();
  for (const type of directoryRequestTypes) {
    const label = directoryOperationLabel(type);
    byOperation.set(type, { seconds: seconds.cell(label), errors: errors.cell(label) });
  }
  return {
    requestEnded(operation, elapsedMs, failed) {
      // The operation is typed: a miss here is an unchecked cast, not worth a series of its own.
      const cells = byOperation.get(operation);
      if (cells === undefined) return;
      cells.seconds.observe(elapsedMs / 1000);
      if (failed) cells.errors.value++;
    },
  };
}
