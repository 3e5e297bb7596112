// @cellwire/cluster: the distributed logic client (ring, membership watch, routing to the owner, the
// directory client) and what every Cellwire process shares (config reading, logging, NATS, shutdown).
export * from "./errors.ts";
export * from "./config-kit.ts";
export * from "./backoff.ts";
export * from "./sleep.ts";
export * from "./bounded-cache.ts";
export * from "./oldest-first.ts";
export * from "./concurrency-limiter.ts";
export * from "./request-batcher.ts";
export * from "./turn-batch.ts";
export * from "./ring.ts";
export * from "./membership-view.ts";
export * from "./log-lines.ts";
export * from "./membership.ts";
export * from "./lease-holder.ts";
export * from "./cell-buckets.ts";
// The pure core of the membership watch and of a lease, for the simulation (sim/), which drives the same code.
export { LeaseTerm, MembershipCore, leaseExpiryCheckIntervalMs, type MembershipWatchEntry } from "./membership-core.ts";
export * from "./nats-json.ts";
export * from "./expect-reply.ts";
export * from "./router.ts";
export * from "./directory-cache.ts";
export * from "./cached-homes.ts";
// The Router over NATS; the ring-level step inside it (cell-router.ts) is not exported (one routing path).
export * from "./start-router.ts";
export * from "./directory-client.ts";
export * from "./directory-request-metrics.ts";
export * from "./directory-changes.ts";
export * from "./direct-conversation.ts";
export * from "./service-runtime.ts";
export * from "./service-logger.ts";
export { logRateLimitsDefault, type LogRateLimits } from "./log-rate-limiter.ts";
export * from "./service-metrics.ts";
export * from "./plain-histogram.ts";
export * from "./plain-counter.ts";
export * from "./cell-request-metrics.ts";
export * from "./health.ts";
export * from "./admin-listener.ts";
export * from "./nats-connected.ts";
export * from "./prometheus.ts";
export * from "./nats-access.ts";
// Tracing: the facade only; the OpenTelemetry SDK behind it is imported by startTracing when an endpoint is set.
export * from "./tracing/tracing.ts";
export * from "./tracing/trace-ids.ts";
export { traceparentHeaders, traceparentOf } from "./tracing/nats-trace-headers.ts";
