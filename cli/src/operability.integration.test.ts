// What an operator sees (issue 13, item 9): the topology on a 3-node NATS cluster and a Redis of its own,
// under steady traffic from three users on five devices; one NATS node is SIGKILLed, then Redis is
// stopped and started again. Every process is scraped all along (edges' /metrics, workers' and the
// directory's admin listeners): the scrapes must show the node loss (NATS disconnects and reconnects on the
// processes that were on it) and the Redis outage (the directory's redis_up at 0 and /readyz 503 naming
// redis while the edges stay ready), and afterwards the history checker must find nothing lost, doubled or
// reordered.
import { afterAll, beforeAll, expect, it, onTestFailed } from "vitest";
import type { NatsConnection } from "@nats-io/transport-node";
import { DirectoryClient } from "@cellwire/cluster";
import { membershipBucket } from "@cellwire/protocol";
import { parsePrometheusText, pollUntil, type PrometheusScrape } from "@cellwire/testkit";
import { isWarningOrError } from "../test/log-lines.ts";
import { clusterTopologyEnvironment, connectionNames, startNatsCluster, streamPlacement, type NatsCluster } from "../test/nats-cluster.ts";
import { RecordedRun, type RecordedDevice } from "../test/recorded-run.ts";
import { startPrivateRedis, type PrivateRedis } from "../test/redis-server.ts";
import { startTestTopology, testServices, type TestTopology } from "./test-topology.ts";

const cellIds = ["a", "b"] as const;
const sendAttemptsMax = 6;
const reconnectDeadlineMs = 15_000;
const outageDeadlineMs = 15_000;
const convergeDeadlineMs = 30_000;
const scrapeTimeoutMs = 2000;
const scrapeIntervalMs = 250;

let cluster: NatsCluster | undefined;
let redis: PrivateRedis | undefined;
let test: TestTopology | undefined;
let natsConnection: NatsConnection | undefined;
const run = new RecordedRun(sendAttemptsMax);

function running(): { cluster: NatsCluster; redis: PrivateRedis; test: TestTopology } {
  if (cluster === undefined || redis === undefined || test === undefined) throw new Error("the services and the topology did not start");
  return { cluster, redis, test };
}

/** Where each process serves /metrics and /readyz: edges on their port, the others on their admin listener. */
function scrapeTargets(): { processName: string; baseUrl: string }[] {
  const topology = running().test.topology;
  const edges = topology.edges.map((edge) => ({ processName: `cellwire-edge-${edge.edgeId}`, baseUrl: edge.httpUrl }));
  const others = topology
    .processes()
    .flatMap((process) =>
      process.adminPort === undefined ? [] : [{ processName: process.processName, baseUrl: `http://127.0.0.1:${process.adminPort}/` }],
    );
  return [...edges, ...others];
}

async function scrape(baseUrl: string): Promise<PrometheusScrape> {
  const response = await fetch(new URL("metrics", baseUrl), { signal: AbortSignal.timeout(scrapeTimeoutMs) });
  if (!response.ok) throw new Error(`${baseUrl}metrics answered ${response.status}`);
  return parsePrometheusText(await response.text());
}

async function scrapeAll(): Promise<Map<string, PrometheusScrape>> {
  return new Map(await Promise.all(scrapeTargets().map(async (target) => [target.processName, await scrape(target.baseUrl)] as const)));
}

async function readyz(baseUrl: string): Promise<{ status: number; body: { checks?: Record<string, { ok: boolean }> } }> {
  const response = await fetch(new URL("readyz", baseUrl), { signal: AbortSignal.timeout(scrapeTimeoutMs) });
  return { status: response.status, body: (await response.json()) as { checks?: Record<string, { ok: boolean }> } };
}

function urlOf(processName: string): string {
  const target = scrapeTargets().find((candidate) => candidate.processName === processName);
  if (target === undefined) throw new Error(`no scrape target for ${processName}`);
  return target.baseUrl;
}

beforeAll(async () => {
  const natsCluster = await startNatsCluster();
  cluster = natsCluster;
  redis = await startPrivateRedis();
  test = await startTestTopology({
    label: "ops",
    natsServers: natsCluster.servers,
    natsUsers: natsCluster.users,
    redisUrl: redis.url,
    extraEnvironment: clusterTopologyEnvironment,
  }).catch((error: unknown) => {
    throw new Error(`${String(error)}\n${natsCluster.outputTail(30)}`, { cause: error });
  });
  natsConnection = await test.connectNats("admin");
  const directory = new DirectoryClient(natsConnection, test.namespace, 5000);
  for (const [userId, cellId] of [
    ["alice", "a"],
    ["bob", "b"],
    ["carol", "a"],
  ] as const) {
    await directory.assignUser(userId, cellId);
  }
}, 120_000);

afterAll(async () => {
  run.closeAll();
  await natsConnection?.close();
  try {
    if (test !== undefined) await test.destroy(cluster?.liveServers() ?? testServices.natsServers);
  } finally {
    await cluster?.stop();
    await redis?.destroy();
  }
}, 60_000);

it("shows a NATS node loss and a Redis restart in every process's metrics, and the checker finds nothing lost", async () => {
  const { cluster: natsCluster, redis: privateRedis, test: topology } = running();
  onTestFailed(() => {
    process.stdout.write(`${topology.output.filter(isWarningOrError).slice(-80).join("\n")}\n${natsCluster.outputTail(15)}\n`);
  });
  const urls = topology.topology.edges.map((edge) => edge.webSocketUrl);
  const open = (userId: string, deviceId: string, first: number): Promise<RecordedDevice> =>
    run.openDevice(userId, deviceId, [...urls.slice(first), ...urls.slice(0, first)], 0);
  const devices = [
    await open("alice", "phone", 0),
    await open("alice", "laptop", 1),
    await open("bob", "phone", 1),
    await open("carol", "phone", 0),
  ];
  const [alicePhone, , bobPhone, carolPhone] = devices;
  if (alicePhone === undefined || bobPhone === undefined || carolPhone === undefined) throw new Error("devices missing");
  const aliceBob = await alicePhone.client.openDirect("bob");
  const group = await carolPhone.client.createGroup("ops", ["alice", "bob"]);
  for (const conversation of [aliceBob, group]) run.conversation(conversation.conversationId, conversation.memberUserIds);

  // Steady traffic from every device until told to stop: each sends, waits for its ack, and sends again.
  let sending = true;
  let sent = 0;
  const traffic = Promise.all(
    devices.map(async (device) => {
      const conversations = run.conversationsOf(device.userId);
      for (let index = 0; sending; index++) {
        const conversationId = conversations[index % conversations.length] ?? "";
        await run.send(
          device,
          conversationId,
          `ops ${index} from ${device.userId}/${device.deviceId}`,
          `${device.userId}-${device.deviceId}-${index}`,
        );
        sent++;
      }
    }),
  );
  traffic.catch(() => undefined);
  await pollUntil("traffic to start", () => (sent >= 40 ? true : undefined), { deadlineMs: 15_000 });

  const before = await scrapeAll();
  expect(before.size).toBe(2 + 4 + 1);
  for (const [processName, metrics] of before) {
    expect(metrics.sum("cellwire_nats_disconnects_total"), processName).toBe(0);
    expect(metrics.find("cellwire_process_cpu_seconds_total", { process: processName }), processName).toHaveLength(1);
  }
  const acksBefore = [...before].reduce((total, [, metrics]) => total + metrics.sum("cellwire_edge_acks_total", { outcome: "stored" }), 0);
  expect(acksBefore).toBeGreaterThanOrEqual(40);

  // 1. SIGKILL the NATS node serving the most Cellwire connections.
  const counts = await Promise.all(natsCluster.nodes.map(async (_, index) => (await connectionNames(natsCluster, index)).length));
  const victim = counts.indexOf(Math.max(...counts));
  const stranded = (await connectionNames(natsCluster, victim)).filter(
    (name) => name.startsWith("cellwire-") && name !== `cellwire-test-launcher-${topology.namespace}`,
  );
  const strandedProcesses = stranded.filter((name) => scrapeTargets().some((target) => target.processName === name));
  expect(strandedProcesses.length).toBeGreaterThan(0);
  const killedAt = performance.now();
  await natsCluster.kill(victim);
  // The scrapes show it: each process that was on the node counts a disconnect and a reconnect.
  await pollUntil(
    `the processes on the killed node (${strandedProcesses.join(", ")}) to count a NATS disconnect and reconnect`,
    async () => {
      const now = await scrapeAll();
      const shown = strandedProcesses.every(
        (name) =>
          (now.get(name)?.sum("cellwire_nats_disconnects_total") ?? 0) >= 1 &&
          (now.get(name)?.sum("cellwire_nats_reconnects_total") ?? 0) >= 1,
      );
      return shown ? now : undefined;
    },
    { deadlineMs: reconnectDeadlineMs, intervalMs: scrapeIntervalMs },
  );
  const natsShownAfterMs = performance.now() - killedAt;
  const sentAtKill = sent;
  await pollUntil("traffic to go on after the node loss", () => (sent >= sentAtKill + 40 ? true : undefined), { deadlineMs: 30_000 });

  // 2. Stop Redis, under traffic, and start it again.
  const directoryName = "cellwire-directory";
  await privateRedis.stop();
  const stoppedAt = performance.now();
  const duringOutage = await pollUntil(
    "the directory's scrape and /readyz to show Redis down",
    async () => {
      const metrics = await scrape(urlOf(directoryName));
      const ready = await readyz(urlOf(directoryName));
      return metrics.sum("cellwire_directory_redis_up") === 0 && ready.status === 503 && ready.body.checks?.["redis"]?.ok === false
        ? { metrics, ready }
        : undefined;
    },
    { deadlineMs: outageDeadlineMs, intervalMs: scrapeIntervalMs },
  );
  const redisShownAfterMs = performance.now() - stoppedAt;
  // The edges stay in the balancer: cached users keep chatting through a directory outage (decision 0032).
  for (const edge of topology.topology.edges) expect((await readyz(edge.httpUrl)).status, `edge ${edge.edgeId} /readyz`).toBe(200);
  const sentInOutage = sent;
  await pollUntil("traffic to go on while Redis is down", () => (sent >= sentInOutage + 20 ? true : undefined), { deadlineMs: 30_000 });
  await privateRedis.start();
  await pollUntil(
    "the directory to show Redis back",
    async () => {
      const metrics = await scrape(urlOf(directoryName));
      return metrics.sum("cellwire_directory_redis_up") === 1 && (await readyz(urlOf(directoryName))).status === 200 ? true : undefined;
    },
    { deadlineMs: outageDeadlineMs, intervalMs: scrapeIntervalMs },
  );
  const sentAfterRedis = sent;
  await pollUntil("traffic to go on after Redis is back", () => (sent >= sentAfterRedis + 20 ? true : undefined), { deadlineMs: 30_000 });

  sending = false;
  await traffic;
  const after = await scrapeAll();
  await run.settle(convergeDeadlineMs);
  const report = await run.check(testServices.postgresAdminUrl, topology.namespace, cellIds);
  const acksAfter = [...after].reduce((total, [, metrics]) => total + metrics.sum("cellwire_edge_acks_total", { outcome: "stored" }), 0);
  const workerSends = [...after].reduce(
    (total, [, metrics]) => total + metrics.sum("cellwire_worker_requests_total", { kind: "send", outcome: "ok" }),
    0,
  );
  const directoryErrors = duringOutage.metrics.samples
    .filter((sample) => sample.name === "cellwire_directory_requests_total" && sample.labels["outcome"] !== "ok")
    .reduce((total, sample) => total + sample.value, 0);
  process.stdout.write(
    [
      `operability: ${run.record.acks.length} acked of ${run.record.sends.length} sent, ${run.retries} app-level retries`,
      `operability: SIGKILL NATS node ${natsCluster.nodes[victim]?.name ?? victim}: ${strandedProcesses.join(", ")} showed a disconnect and a reconnect in their scrapes ${natsShownAfterMs.toFixed(0)} ms after the kill`,
      `operability: Redis stopped: the directory's scrape showed redis_up 0 and /readyz 503 (${JSON.stringify(duringOutage.ready.body.checks)}) ${redisShownAfterMs.toFixed(0)} ms after; ${directoryErrors} directory requests not ok meanwhile; the edges stayed ready`,
      `operability: acks counted by the edges: ${acksBefore} before, ${acksAfter} at the end; sends stored counted by the workers: ${workerSends}`,
      `operability: checker: ${report.summary}`,
      "",
    ].join("\n"),
  );
  // A sample of what an operator scrapes (the closing note of issue 13 quotes it): an edge's and a
  // worker's own series, histograms by their count and sum only.
  const sample = (processName: string, prefixes: readonly string[]): string =>
    (after.get(processName)?.samples ?? [])
      .filter((metric) => prefixes.some((prefix) => metric.name.startsWith(prefix)) && !metric.name.endsWith("_bucket"))
      .map((metric) => {
        const labels = Object.entries(metric.labels)
          .filter(([name]) => name !== "service" && name !== "process")
          .map(([name, value]) => `${name}="${value}"`)
          .join(",");
        return `operability: scrape ${processName}: ${metric.name}${labels === "" ? "" : `{${labels}}`} ${metric.value}`;
      })
      .join("\n");
  process.stdout.write(
    `${sample("cellwire-edge-1", ["cellwire_edge_", "cellwire_nats_"])}\n${sample("cellwire-worker-a-1", ["cellwire_worker_", "cellwire_nats_"])}\n`,
  );
  // The edges' ack counters and the workers' send counters agree with the clients' record.
  expect(acksAfter).toBeGreaterThanOrEqual(run.record.acks.length);
  expect(workerSends).toBeGreaterThanOrEqual(run.record.acks.length);
  expect(report.findings).toEqual([]);
  expect(report.ok).toBe(true);
  // The cleanup deletes the membership buckets: JetStream's meta group and each bucket must be led by a live
  // node again first (what the dead node led elects a new leader within 4 to 9 s on nats-server 2.9).
  const victimName = natsCluster.nodes[victim]?.name;
  const survivor = natsCluster.nodes.find((_, index) => index !== victim);
  await pollUntil(
    "JetStream's meta group to be led by a live node",
    async () => {
      const response = await fetch(`${survivor?.monitorUrl ?? ""}/jsz`, { signal: AbortSignal.timeout(scrapeTimeoutMs) });
      const body = (await response.json()) as { meta_cluster?: { leader?: string } };
      const leader = body.meta_cluster?.leader;
      return leader !== undefined && leader !== "" && leader !== victimName ? true : undefined;
    },
    { deadlineMs: 20_000, intervalMs: scrapeIntervalMs },
  );
  for (const cellId of cellIds) {
    const streamName = `KV_${membershipBucket(topology.namespace, cellId)}`;
    await pollUntil(
      `${streamName} to be led by a live node`,
      async () => {
        const leader = (await streamPlacement(natsCluster, streamName))?.leader;
        return leader !== undefined && leader !== victimName ? true : undefined;
      },
      { deadlineMs: 20_000, intervalMs: scrapeIntervalMs },
    );
  }
}, 180_000);
