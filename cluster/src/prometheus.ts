// prom-client's metric classes, for the services that build on @cellwire/cluster (edge, cells, directory): one
// copy of prom-client, the one their registries (service-metrics.ts) come from, so a metric and its
// registry always match.
export { Counter, Gauge, Histogram, Registry } from "prom-client";
