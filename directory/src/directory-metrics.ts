// The directory's Prometheus metrics (docs/decisions/0032): requests by operation (the request type) and
// outcome (ok, or the error code), their latency, whether Redis is up, and rebuilds. Label values come
// from closed sets (request types, error codes); never a user or conversation id.
import {
  Counter,
  directoryOperationLabel,
  Gauge,
  internalLatencyBucketsSeconds,
  metricPrefix,
  PlainHistogram,
  type HistogramCell,
  type Registry,
} from "@cellwire/cluster";
import { directoryRequestTypes, type DirectoryReply, type DirectoryRequest } from "@cellwire/protocol";

export type DirectoryServiceMetrics = {
  /** One request answered; `operation` undefined for one that did not decode; `startedAtMs` from performance.now(). */
  readonly answered: (operation: DirectoryRequest["type"] | undefined, reply: DirectoryReply, startedAtMs: number) => void;
};

export const noDirectoryServiceMetrics: DirectoryServiceMetrics = { answered: () => {} };

const malformed = "malformed";

export type DirectoryMetrics = {
  readonly service: DirectoryServiceMetrics;
  readonly rebuilt: () => void;
};

export function createDirectoryMetrics(registry: Registry, redisUp: () => boolean): DirectoryMetrics {
  const prefix = `${metricPrefix}directory_`;
  const requestsTotal = new Counter({
    name: `${prefix}requests_total`,
    help: "Directory requests answered, by operation (request type) and outcome (ok, or the error code).",
    labelNames: ["operation", "outcome"] as const,
    registers: [registry],
  });
  const requestSeconds = new PlainHistogram({
    name: `${prefix}request_seconds`,
    help: "From a directory request's arrival to its answer, by operation.",
    labelName: "operation",
    buckets: internalLatencyBucketsSeconds,
    registry,
  });
  new Gauge({
    name: `${prefix}redis_up`,
    help: "1 while the directory's Redis connection is ready, else 0.",
    registers: [registry],
    collect() {
      this.set(redisUp() ? 1 : 0);
    },
  });
  const rebuilds = new Counter({
    name: `${prefix}rebuilds_total`,
    help: "Rebuilds of the directory's entries from the cells' inventories this instance completed.",
    registers: [registry],
  });
  type Instruments = {
    readonly label: string;
    readonly seconds: HistogramCell;
    readonly outcomes: Map<string, Counter.Internal>;
  };
  const byOperation = new Map<string, Instruments>();
  // The same operation labels as the edges' and workers' side of these requests (directory-request-metrics.ts).
  for (const operation of [...directoryRequestTypes, malformed]) {
    const label = directoryOperationLabel(operation);
    byOperation.set(operation, { label, seconds: requestSeconds.cell(label), outcomes: new Map() });
  }
  const malformedInstruments = byOperation.get(malformed) as Instruments;
  return {
    service: {
      answered: (operation, reply, startedAtMs) => {
        const instruments = (operation === undefined ? undefined : byOperation.get(operation)) ?? malformedInstruments;
        instruments.seconds.observe((performance.now() - startedAtMs) / 1000);
        const outcome = reply.type === "directory.error" ? reply.code : "ok";
        let counter = instruments.outcomes.get(outcome);
        if (counter === undefined) {
          counter = requestsTotal.labels(instruments.label, outcome);
          instruments.outcomes.set(outcome, counter);
        }
        counter.inc();
      },
    },
    rebuilt: () => rebuilds.inc(),
  };
}
