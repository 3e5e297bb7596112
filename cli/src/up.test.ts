// `cellwire up`'s config: which NATS the local topology runs on, from the command line and the environment.
import { describe, expect, it } from "vitest";
import { ConfigError } from "@cellwire/cluster";
import { loadUpConfig, natsClusterBanner } from "./up.ts";

describe("loadUpConfig: the NATS of the local topology", () => {
  it("runs one private nats-server by default", () => {
    const config = loadUpConfig({});
    expect(config.natsClusterNodeCount).toBe(0);
    expect(config.natsServers).toBeUndefined();
  });

  it("runs a 3-node cluster with --nats-cluster", () => {
    expect(loadUpConfig({}, { natsCluster: true }).natsClusterNodeCount).toBe(3);
  });

  it("runs a cluster of CELLWIRE_NATS_CLUSTER_NODES nodes, which the flag does not shrink", () => {
    expect(loadUpConfig({ CELLWIRE_NATS_CLUSTER_NODES: "3" }).natsClusterNodeCount).toBe(3);
    expect(loadUpConfig({ CELLWIRE_NATS_CLUSTER_NODES: "5" }, { natsCluster: true }).natsClusterNodeCount).toBe(5);
    expect(loadUpConfig({ CELLWIRE_NATS_CLUSTER_NODES: "0" }).natsClusterNodeCount).toBe(0);
  });

  it("refuses a cluster too small to keep a quorum of a bucket replicated three times, or too large", () => {
    for (const nodes of ["1", "2", "8", "three", "-3"]) {
      expect(() => loadUpConfig({ CELLWIRE_NATS_CLUSTER_NODES: nodes }), nodes).toThrow(ConfigError);
    }
  });

  it("refuses a private cluster next to servers named by CELLWIRE_NATS_SERVERS", () => {
    expect(() => loadUpConfig({ CELLWIRE_NATS_SERVERS: "127.0.0.1:4222" }, { natsCluster: true })).toThrow(/CELLWIRE_NATS_SERVERS/);
    expect(() => loadUpConfig({ CELLWIRE_NATS_SERVERS: "127.0.0.1:4222", CELLWIRE_NATS_CLUSTER_NODES: "3" })).toThrow(ConfigError);
    expect(loadUpConfig({ CELLWIRE_NATS_SERVERS: "127.0.0.1:4222" }).natsServers).toEqual(["127.0.0.1:4222"]);
  });
});

describe("natsClusterBanner", () => {
  it("names every node with its client and monitoring addresses and its pid", () => {
    const lines = natsClusterBanner([
      { name: "n1", clientUrl: "127.0.0.1:4301", monitorUrl: "http://127.0.0.1:8301", pid: 101 },
      { name: "n2", clientUrl: "127.0.0.1:4302", monitorUrl: "http://127.0.0.1:8302", pid: 102 },
      { name: "n3", clientUrl: "127.0.0.1:4303", monitorUrl: "http://127.0.0.1:8303", pid: undefined },
    ]).join("\n");
    expect(lines).toContain("replicated 3 times");
    for (const [client, monitor] of [
      ["4301", "8301"],
      ["4302", "8302"],
      ["4303", "8303"],
    ]) {
      expect(lines).toMatch(new RegExp(`client 127\\.0\\.0\\.1:${client} +monitoring http://127\\.0\\.0\\.1:${monitor}`));
    }
    expect(lines).toContain("pid 101");
    expect(lines).toContain("pid ?");
  });
});
