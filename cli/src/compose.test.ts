// compose.yaml is the production map (docs/decisions/0036): with no Docker engine in CI, this is what keeps
// it true. The files as shipped have no problem; each planted mistake below is found, so the first test
// would fail on it too.
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";
import { cliCommands } from "./cli-commands.ts";
import { deploymentProblems, interpolate, readDeployment, type ComposeService, type Deployment } from "../test/deployment-map.ts";

const root = fileURLToPath(new URL("../..", import.meta.url));

function shipped(): Deployment {
  return readDeployment(root);
}

function service(deployment: Deployment, name: string): ComposeService {
  const found = deployment.services[name];
  if (found === undefined) throw new Error(`compose.yaml has no service ${name}`);
  return found;
}

describe("compose.yaml, the production map", () => {
  it("parses, and agrees with the code and with its Prometheus, Grafana and haproxy files", () => {
    expect(deploymentProblems(shipped())).toEqual([]);
  });

  it("is the map issue 13 asks for: a 3-node NATS cluster, a Postgres per cell, 3 workers in each of 2 cells, 2 edges", () => {
    const names = Object.keys(shipped().services);
    for (const name of ["nats-1", "nats-2", "nats-3", "redis", "postgres-a", "postgres-b", "directory", "haproxy", "admin-api"])
      expect(names).toContain(name);
    expect(names.filter((name) => /^worker-a-\d$/.test(name))).toHaveLength(3);
    expect(names.filter((name) => /^worker-b-\d$/.test(name))).toHaveLength(3);
    expect(names.filter((name) => /^edge-\d$/.test(name))).toHaveLength(2);
    for (const name of ["prometheus", "grafana", "redis-exporter", "postgres-exporter-a", "postgres-exporter-b", "nats-exporter-1"])
      expect(names).toContain(name);
  });

  it("finds an unpinned image: untagged, latest, or a tag that moves", () => {
    for (const [image, said] of [
      ["redis", "has no tag"],
      ["redis:latest", "is latest"],
      ["redis:7", "is not pinned to a version"],
    ] as const) {
      const deployment = shipped();
      service(deployment, "redis").image = image;
      expect(deploymentProblems(deployment)).toEqual([expect.stringContaining(`redis: image ${image} ${said}`)]);
    }
  });

  it("finds a command the code does not have: a CLI command or a process entry", () => {
    const deployment = shipped();
    service(deployment, "admin-api").command = ["node", "cli/bin/cellwire.js", "admin-apii"];
    service(deployment, "worker-a-1").command = ["node", "--import", "tsx", "cells/src/mian.ts"];
    expect(deploymentProblems(deployment)).toEqual([
      expect.stringContaining("worker-a-1: runs cells/src/mian.ts, which is not a Cellwire process entry"),
      expect.stringContaining("admin-api: runs `cellwire admin-apii`, which the CLI does not have"),
    ]);
    expect(cliCommands).toContain("up");
  });

  it("finds a mis-typed variable, prefixed or shared", () => {
    const deployment = shipped();
    service(deployment, "worker-b-2").environment["WORKER_LEASE_MSS"] = "1500";
    service(deployment, "edge-1").environment["CELLWIRE_NATS_SERVER"] = "nats-1:4222";
    // A setting of another service: the directory reads no WORKER_ variable.
    service(deployment, "directory").environment["WORKER_POOL_SIZE"] = "20";
    expect(deploymentProblems(deployment)).toEqual([
      "directory: sets WORKER_POOL_SIZE, which its code does not read (a typo, or a setting of another service?)",
      "worker-b-2: sets WORKER_LEASE_MSS, which its code does not read (a typo, or a setting of another service?)",
      "edge-1: sets CELLWIRE_NATS_SERVER, which its code does not read (a typo, or a setting of another service?)",
    ]);
  });

  it("finds a value the service's config refuses, as the process would at start", () => {
    const deployment = shipped();
    service(deployment, "worker-a-3").environment["WORKER_HEARTBEAT_INTERVAL_MS"] = "1000";
    expect(deploymentProblems(deployment)).toEqual([
      expect.stringContaining(
        "worker-a-3: its config refuses compose's settings: WORKER_HEARTBEAT_INTERVAL_MS (1000) must be at most half",
      ),
    ]);
  });

  it("finds a service wired to the wrong NATS user's password or to a host that is no service", () => {
    const deployment = shipped();
    service(deployment, "edge-2").environment["CELLWIRE_NATS_PASSWORD"] = "${CELLWIRE_NATS_WORKER_PASSWORD}";
    service(deployment, "worker-b-1").environment["WORKER_POSTGRES_ADMIN_URL"] = "postgres://postgres@postgres:5432/postgres";
    expect(deploymentProblems(deployment)).toEqual([
      "worker-b-1: WORKER_POSTGRES_ADMIN_URL names host postgres, which is no service",
      "edge-2: CELLWIRE_NATS_PASSWORD must be the edge user's (CELLWIRE_NATS_EDGE_PASSWORD)",
    ]);
  });

  it("finds a scrape target that is no service, a wrong port, and a Cellwire process nobody scrapes", () => {
    const deployment = shipped();
    const workers = deployment.scrapeJobs.find((job) => job.name === "cellwire-worker");
    if (workers === undefined) throw new Error("no cellwire-worker job");
    workers.targets = workers.targets.filter((target) => target !== "worker-b-3:9464").concat(["worker-c-1:9464"]);
    const directory = deployment.scrapeJobs.find((job) => job.name === "cellwire-directory");
    if (directory === undefined) throw new Error("no cellwire-directory job");
    directory.targets = ["directory:9464"];
    expect(deploymentProblems(deployment)).toEqual([
      "prometheus job cellwire-worker: target worker-c-1:9464 is no service",
      "prometheus job cellwire-directory: directory serves /metrics on 9465, not 9464",
      "prometheus: worker-b-3 is scraped by no job",
    ]);
  });

  it("finds the admin API scraped nowhere, on a wrong port, without its token, or with a token file Prometheus is not given", () => {
    const unscraped = shipped();
    unscraped.scrapeJobs = unscraped.scrapeJobs.filter((job) => job.name !== "cellwire-admin");
    expect(deploymentProblems(unscraped)).toEqual(["prometheus: admin-api is scraped by no job"]);

    const deployment = shipped();
    const admin = deployment.scrapeJobs.find((job) => job.name === "cellwire-admin");
    if (admin === undefined) throw new Error("no cellwire-admin job");
    admin.targets = ["admin-api:9464"];
    admin.credentialsFile = undefined;
    expect(deploymentProblems(deployment)).toEqual([
      "prometheus job cellwire-admin: admin-api serves /metrics on 8090, not 9464",
      "prometheus job cellwire-admin: admin-api's /metrics needs a bearer token (authorization.credentials_file), or every scrape is refused",
    ]);

    const ungiven = shipped();
    service(ungiven, "prometheus").secrets = [];
    expect(deploymentProblems(ungiven)).toEqual([
      "prometheus job cellwire-admin: its credentials file /run/secrets/admin_metrics_token is no secret compose gives the prometheus service",
    ]);
  });

  it("finds an alert or a panel on a metric, job or error code that does not exist", () => {
    const deployment = shipped();
    const rule = deployment.alerts.find((candidate) => candidate.alert === "CellwireWorkerWithoutLease");
    if (rule === undefined) throw new Error("no CellwireWorkerWithoutLease");
    rule.expr = 'cellwire_worker_owns_leases{job="cellwire-workers"} == 0';
    deployment.dashboardExpressions[0] = 'sum(rate(cellwire_edge_errors_sent_total{code="unavailable"}[1m]))';
    expect(deploymentProblems(deployment)).toEqual([
      "alert CellwireWorkerWithoutLease: cellwire_worker_owns_leases is not a metric Cellwire exports",
      "alert CellwireWorkerWithoutLease: job cellwire-workers is not a scrape job of deploy/prometheus/prometheus.yml",
      "alert CellwireWorkerWithoutLease: docs/operations.md does not list it with its expression as in the rules file",
      "dashboard query 1: unavailable is not an error code (protocol/src/codes.ts)",
    ]);
  });

  it("finds an edge haproxy does not balance, or one that does not trust haproxy's PROXY header", () => {
    const deployment = shipped();
    deployment.haproxyServers = deployment.haproxyServers.filter((server) => server.host !== "edge-2");
    service(deployment, "edge-1").environment["EDGE_TRUSTED_PROXIES"] = "";
    expect(deploymentProblems(deployment)).toEqual([
      "edge-1: EDGE_TRUSTED_PROXIES must name haproxy's address, or its PROXY header is ignored and every client counts as haproxy",
      "haproxy: edge edge-2 is in no backend",
    ]);
  });

  it("finds an edge haproxy sends no PROXY v2 header, and haproxy in TCP mode, where a client could name its own address", () => {
    const deployment = shipped();
    const server = deployment.haproxyServers.find((candidate) => candidate.host === "edge-1");
    if (server === undefined) throw new Error("haproxy balances no edge-1");
    server.options = server.options.filter((option) => option !== "send-proxy-v2");
    deployment.haproxyModes = ["tcp", ...deployment.haproxyModes];
    expect(deploymentProblems(deployment)).toEqual([
      "haproxy: server edge-1 sends no PROXY v2 header (send-proxy-v2), so its edge counts every client as haproxy",
      "haproxy: mode tcp passes clients' bytes to the edges, which would let a client name its own address",
    ]);
  });

  it("refuses to start without the operator's secrets: none has a default", () => {
    const deployment = shipped();
    deployment.operatorEnvironment = {};
    const problems = deploymentProblems(deployment);
    for (const secret of [
      "CELLWIRE_NATS_EDGE_PASSWORD",
      "CELLWIRE_NATS_WORKER_PASSWORD",
      "CELLWIRE_NATS_DIRECTORY_PASSWORD",
      "CELLWIRE_NATS_ADMIN_PASSWORD",
      "CELLWIRE_POSTGRES_PASSWORD",
      "CELLWIRE_DIRECT_CONVERSATION_KEY",
      "ADMIN_TOKEN",
      "ADMIN_METRICS_TOKEN",
    ])
      expect(problems).toContainEqual(expect.stringContaining(`compose refuses to start without ${secret}`));
  });
});

describe("interpolate, as compose does", () => {
  it("reads $$, $NAME, defaults and required variables", () => {
    const problems: string[] = [];
    const variables = { SET: "value", EMPTY: "" };
    expect(interpolate("$$SET $SET ${SET} ${EMPTY:-fallback} ${EMPTY-kept} ${UNSET:-fallback}", variables, "x", problems)).toBe(
      "$SET value value fallback  fallback",
    );
    expect(interpolate("${EMPTY:?needed}${UNSET?needed too}", variables, "x", problems)).toBe("");
    expect(problems).toEqual([
      "x: compose refuses to start without EMPTY (needed)",
      "x: compose refuses to start without UNSET (needed too)",
    ]);
  });
});
