// The local topology (npm start, the integration tests, the benchmarks) asks for what its edges need: dev
// mode, and admission limits that let every client come from 127.0.0.1.
import { describe, expect, it } from "vitest";
import { loadEdgeConfig } from "@cellwire/edge";
import { localEdgeEnvironment } from "./topology.ts";

describe("the local topology's edges", () => {
  it("run dev mode because they ask for it, on loopback, without a warning", () => {
    const { config, unknownVariables, warnings } = loadEdgeConfig(localEdgeEnvironment);
    expect(config.auth.mode).toBe("dev");
    expect(config.host).toBe("127.0.0.1");
    expect(unknownVariables).toEqual([]);
    expect(warnings).toEqual([]);
  });

  it("admit as many sockets from one address, and as many unauthenticated, as an edge holds sessions", () => {
    // The connections benchmark opens 10,000 sockets from 127.0.0.1 at once; the chat benchmark 1,000 users.
    const { config } = loadEdgeConfig(localEdgeEnvironment);
    expect(config.admission.connectionsPerAddressMax).toBeGreaterThanOrEqual(config.sessionsMax);
    expect(config.admission.unauthenticatedMax).toBeGreaterThanOrEqual(config.sessionsMax);
    expect(config.sessionsMax).toBeGreaterThanOrEqual(10_000);
  });
});
