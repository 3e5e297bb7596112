// The admin API's own metrics, on the process's registry (createServiceMetrics("admin", ...)) beside Node's
// defaults and the NATS connection's counters. Labels are closed sets: an operation from the routes, or
// "none" for a request refused before it named one (no token, no such path); an outcome is the answer's
// error code or "ok". Not on the message path: prom-client's label lookups cost nothing that matters here.
import { Counter, Gauge, Histogram, metricPrefix, type Registry } from "@cellwire/cluster";
import type { AdminRequest } from "./routes.ts";

/** What a request is counted under: the operation it asked for, or none when it was refused before that. */
export type AdminOperationLabel = AdminRequest["operation"] | "none";

/**
 * Seconds, from a refused request (a millisecond) to a drain of a large cell (minutes): the operations run
 * moves and NATS round trips, far beyond the message path's buckets.
 */
export const adminRequestBucketsSeconds: readonly number[] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900];

export type AdminApiMetrics = {
  /** One answered request: its operation, its outcome (an error code or "ok") and how long it took. */
  readonly requestEnded: (operation: AdminOperationLabel, outcome: string, seconds: number) => void;
};

/** Registers the API's metrics; `inFlight` is read at scrape time (the count the busy limit keeps). */
export function createAdminApiMetrics(registry: Registry, inFlight: () => number): AdminApiMetrics {
  const requests = new Counter({
    name: `${metricPrefix}admin_requests_total`,
    help: 'Admin API requests answered, by operation ("none": refused before routing) and outcome (an error code, or "ok").',
    labelNames: ["operation", "outcome"] as const,
    registers: [registry],
  });
  const duration = new Histogram({
    name: `${metricPrefix}admin_request_seconds`,
    help: "Admin API requests' time from arrival to the end of the answer (a drain's stream included), by operation.",
    labelNames: ["operation"] as const,
    buckets: [...adminRequestBucketsSeconds],
    registers: [registry],
  });
  new Gauge({
    name: `${metricPrefix}admin_requests_in_flight`,
    help: "Admin API requests performing their operation now (the count the 503 busy limit applies to).",
    registers: [registry],
    collect() {
      this.set(inFlight());
    },
  });
  return {
    requestEnded: (operation, outcome, seconds) => {
      requests.inc({ operation, outcome });
      duration.observe({ operation }, seconds);
    },
  };
}
