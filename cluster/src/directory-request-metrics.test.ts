// createDirectoryRequestMetrics: a DirectoryClient's requests by operation (the directory's own names,
// without the `directory.` prefix), every operation's series there from the first scrape.
import { Registry } from "prom-client";
import { expect, it } from "vitest";
import type { DirectoryRequest } from "@cellwire/protocol";
import { parsePrometheusText } from "@cellwire/testkit";
import { createDirectoryRequestMetrics } from "./directory-request-metrics.ts";

it("times directory requests by operation and counts the failed ones, under the service's names", async () => {
  const registry = new Registry();
  const metrics = createDirectoryRequestMetrics(registry, "worker");
  const before = parsePrometheusText(await registry.metrics());
  expect(before.find("cellwire_worker_directory_request_seconds_count", { operation: "resolveUser" })).toHaveLength(1);
  expect(before.find("cellwire_worker_directory_request_errors_total", { operation: "moveEntry" })).toHaveLength(1);
  metrics.requestEnded("directory.resolveUser", 3, false);
  metrics.requestEnded("directory.resolveUser", 2000, true);
  metrics.requestEnded("directory.registerCell", 1, false);
  // Typed away from the wire; an unchecked cast cannot make a series of its own.
  metrics.requestEnded("directory.madeUp" as DirectoryRequest["type"], 1, true);
  const after = parsePrometheusText(await registry.metrics());
  expect(after.sum("cellwire_worker_directory_request_seconds_count", { operation: "resolveUser" })).toBe(2);
  expect(after.sum("cellwire_worker_directory_request_seconds_sum", { operation: "resolveUser" })).toBeCloseTo(2.003, 9);
  expect(after.sum("cellwire_worker_directory_request_seconds_count", { operation: "registerCell" })).toBe(1);
  expect(after.sum("cellwire_worker_directory_request_errors_total", { operation: "resolveUser" })).toBe(1);
  expect(after.sum("cellwire_worker_directory_request_errors_total")).toBe(1);
  expect(after.sum("cellwire_worker_directory_request_seconds_count")).toBe(3);
  expect(after.types.get("cellwire_worker_directory_request_seconds")).toBe("histogram");
});
