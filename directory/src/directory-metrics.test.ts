import { describe, expect, it } from "vitest";
import { Registry } from "@cellwire/cluster";
import { parsePrometheusText } from "@cellwire/testkit";
import { createDirectoryMetrics } from "./directory-metrics.ts";

describe("directory metrics", () => {
  it("counts requests by operation and outcome, times them, reads Redis at scrape time and counts rebuilds", async () => {
    const registry = new Registry();
    let redisUp = true;
    const metrics = createDirectoryMetrics(registry, () => redisUp);
    const startedAtMs = performance.now();
    const entry = { kind: "user" as const, id: "alice", cellId: "a", epoch: 1 };
    metrics.service.answered("directory.resolveUser", { type: "directory.entry", entry, placed: true }, startedAtMs);
    metrics.service.answered(
      "directory.resolveUser",
      { type: "directory.error", code: "directory_unavailable", message: "x" },
      startedAtMs,
    );
    metrics.service.answered(undefined, { type: "directory.error", code: "internal", message: "malformed" }, startedAtMs);
    metrics.rebuilt();
    let result = parsePrometheusText(await registry.metrics());
    expect(result.sum("cellwire_directory_requests_total", { operation: "resolveUser", outcome: "ok" })).toBe(1);
    expect(result.sum("cellwire_directory_requests_total", { operation: "resolveUser", outcome: "directory_unavailable" })).toBe(1);
    expect(result.sum("cellwire_directory_requests_total", { operation: "malformed", outcome: "internal" })).toBe(1);
    expect(result.sum("cellwire_directory_request_seconds_count", { operation: "resolveUser" })).toBe(2);
    expect(result.sum("cellwire_directory_redis_up")).toBe(1);
    expect(result.sum("cellwire_directory_rebuilds_total")).toBe(1);
    redisUp = false;
    result = parsePrometheusText(await registry.metrics());
    expect(result.sum("cellwire_directory_redis_up")).toBe(0);
  });
});
