// An edge's /metrics and /readyz under a real topology (issue 13, items 1 and 4): clients chat over
// WebSockets and a scrape, parsed as Prometheus would, shows their frames, sends, acks, latencies and
// sessions counted, with no user or conversation id in any label. Then each dependency is broken: the
// directory killed (the edge stays ready, the detail and the gauge show it), the topology's private
// nats-server killed (503 until it is back), and the edge stopped (503 while it drains).
import { request as httpRequest, Agent } from "node:http";
import { afterAll, beforeAll, expect, it, onTestFailed } from "vitest";
import { parsePrometheusText, pollUntil, type PrometheusScrape } from "@cellwire/testkit";
import { RecordedRun, type RecordedDevice } from "../test/recorded-run.ts";
import { startPrivateNatsServer, type PrivateNatsServer } from "./private-nats-server.ts";
import { placeUsers, startTestTopology, type TestTopology } from "./test-topology.ts";

const sendCount = 5;
const deadlineMs = 20_000;

let nats: PrivateNatsServer | undefined;
let test: TestTopology | undefined;
const run = new RecordedRun();
/** One kept-alive connection to the edge: it still answers on it after SIGTERM closed the listening socket. */
const agent = new Agent({ keepAlive: true, maxSockets: 1 });

function topology(): TestTopology {
  if (test === undefined) throw new Error("the topology did not start");
  return test;
}

function edgeHttpUrl(): string {
  const edge = topology().topology.edges[0];
  if (edge === undefined) throw new Error("no edge");
  return edge.httpUrl;
}

/** GET over the kept-alive agent: status and body. */
function get(path: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const request = httpRequest(new URL(path, edgeHttpUrl()), { agent, timeout: 5000 }, (response) => {
      const chunks: Buffer[] = [];
      response.on("data", (chunk: Buffer) => chunks.push(chunk));
      response.on("end", () => resolve({ status: response.statusCode ?? 0, body: Buffer.concat(chunks).toString("utf8") }));
      response.on("error", reject);
    });
    request.on("timeout", () => request.destroy(new Error(`GET ${path} timed out`)));
    request.on("error", reject);
    request.end();
  });
}

async function scrape(): Promise<PrometheusScrape> {
  const response = await get("metrics");
  expect(response.status).toBe(200);
  return parsePrometheusText(response.body);
}

type Readiness = { status: number; ready: boolean; checks: Record<string, { ok: boolean; detail?: string; decidesReadiness: boolean }> };

async function readiness(): Promise<Readiness> {
  const response = await get("readyz");
  const body = JSON.parse(response.body) as Omit<Readiness, "status">;
  return { status: response.status, ...body };
}

function printOutput(): void {
  process.stdout.write(`${topology().output.slice(-60).join("\n")}\n`);
}

function until(what: string, probe: () => Promise<boolean>): Promise<true> {
  return pollUntil(what, async () => ((await probe()) ? true : undefined), { deadlineMs, intervalMs: 50 });
}

beforeAll(async () => {
  nats = await startPrivateNatsServer();
  test = await startTestTopology({
    label: "edgemetrics",
    natsServers: [nats.clientUrl],
    natsUsers: nats.users,
    cells: [{ cellId: "a", workerCount: 1 }],
    edgeCount: 1,
    // A drain long enough to read /readyz during it (the sessions close at random moments of the window).
    extraEnvironment: { EDGE_DRAIN_MS: "5000", EDGE_DRAIN_GRACE_MS: "2000" },
  });
  await placeUsers(test, [
    ["alice", "a"],
    ["bob", "a"],
  ]);
}, 120_000);

afterAll(async () => {
  run.closeAll();
  agent.destroy();
  try {
    await test?.destroy();
  } finally {
    await nats?.stop();
  }
}, 60_000);

let alice: RecordedDevice;
let bob: RecordedDevice;
let conversationId = "";

it("counts the frames, sends, acks, latencies and sessions of clients chatting, with no id in a label", async () => {
  onTestFailed(printOutput);
  const urls = topology().topology.edges.map((edge) => edge.webSocketUrl);
  alice = await run.openDevice("alice", "phone", urls);
  bob = await run.openDevice("bob", "phone", urls);
  const direct = await alice.client.openDirect("bob");
  conversationId = direct.conversationId;
  run.conversation(conversationId, direct.memberUserIds);
  for (let index = 0; index < sendCount; index++) await run.send(alice, conversationId, `hello ${index}`, `alice-${index}`);
  await bob.untilMessage(conversationId, sendCount, deadlineMs);
  expect(run.retries).toBe(0);

  const scraped = await scrape();
  const sum = (name: string, labels?: Record<string, string>): number => scraped.sum(`cellwire_edge_${name}`, labels);
  expect(sum("frames_received_total", { type: "hello" })).toBe(2);
  expect(sum("frames_received_total", { type: "openDirect" })).toBe(1);
  expect(sum("frames_received_total", { type: "send" })).toBe(sendCount);
  expect(sum("frames_received_total", { type: "unknown" })).toBe(0);
  expect(sum("sends_total")).toBe(sendCount);
  expect(sum("acks_total", { outcome: "stored" })).toBe(sendCount);
  expect(sum("frames_sent_total", { type: "ack" })).toBe(sendCount);
  expect(sum("frames_sent_total", { type: "welcome" })).toBe(2);
  expect(sum("send_ack_seconds_count")).toBe(sendCount);
  expect(sum("send_ack_seconds_sum")).toBeGreaterThan(0);
  // Bob's phone got each message live (and alice's phone its own sends): at least one delivery each.
  expect(sum("send_delivery_seconds_count")).toBeGreaterThanOrEqual(sendCount);
  // Messages read from a conversation's log (and live ones held during that read) are written but not timed.
  expect(sum("frames_sent_total", { type: "message" })).toBeGreaterThanOrEqual(sum("send_delivery_seconds_count"));
  expect(sum("sessions", { state: "welcomed" })).toBe(2);
  expect(sum("sessions", { state: "awaiting_hello" })).toBe(0);
  expect(sum("connections_opened_total")).toBe(2);
  expect(sum("cell_request_seconds_count", { kind: "cell.send" })).toBe(sendCount);
  expect(sum("cell_request_errors_total")).toBe(0);
  expect(sum("directory_cache_lookups_total", { result: "miss" })).toBeGreaterThan(0);
  expect(sum("directory_cache_lookups_total", { result: "hit" })).toBeGreaterThan(0);
  // Each welcomed user's home was asked of the directory once (a miss), timed by the edge's DirectoryClient.
  expect(sum("directory_request_seconds_count", { operation: "resolveUser" })).toBeGreaterThanOrEqual(2);
  expect(sum("directory_request_errors_total")).toBe(0);
  expect(scraped.types.get("cellwire_edge_directory_request_seconds")).toBe("histogram");
  expect(sum("nats_connected")).toBe(1);
  expect(scraped.types.get("cellwire_edge_send_ack_seconds")).toBe("histogram");
  expect(scraped.find("cellwire_nodejs_eventloop_lag_seconds")).not.toEqual([]);
  const ids = ["alice", "bob", conversationId, "phone"];
  const labelValues = scraped.samples.flatMap((sample) => Object.values(sample.labels));
  expect(labelValues.filter((value) => ids.some((id) => value.includes(id)))).toEqual([]);
  expect((await get("livez")).status).toBe(200);
}, 60_000);

it("stays ready while the directory is down, showing it in /readyz's detail and the gauge", async () => {
  onTestFailed(printOutput);
  await until("the directory probed reachable", async () => (await readiness()).checks["directory"]?.ok === true);
  void topology().topology.signal("cellwire-directory", "SIGKILL");
  await until("the directory seen unreachable", async () => (await readiness()).checks["directory"]?.ok === false);
  const during = await readiness();
  expect(during.status).toBe(200);
  expect(during.ready).toBe(true);
  expect(during.checks["directory"]?.decidesReadiness).toBe(false);
  const down = await scrape();
  expect(down.sum("cellwire_edge_directory_reachable")).toBe(0);
  // The probe that found it unreachable is a directory request that failed.
  expect(down.sum("cellwire_edge_directory_request_errors_total", { operation: "listCells" })).toBeGreaterThanOrEqual(1);
  // A cached user keeps chatting.
  await run.send(alice, conversationId, "without the directory", "alice-no-directory");
  await topology().topology.respawn("cellwire-directory");
  await until("the directory reachable again", async () => (await readiness()).checks["directory"]?.ok === true);
  expect((await scrape()).sum("cellwire_edge_directory_reachable")).toBe(1);
}, 60_000);

it("answers /readyz 503 while the edge has lost NATS, and 200 once it is back", async () => {
  onTestFailed(printOutput);
  const server = nats;
  if (server === undefined) throw new Error("nats did not start");
  expect((await readiness()).status).toBe(200);
  await server.crash();
  await until("/readyz 503", async () => (await readiness()).status === 503);
  const down = await readiness();
  expect(down.ready).toBe(false);
  expect(down.checks["nats"]?.ok).toBe(false);
  expect(down.checks["sessions"]?.ok).toBe(true);
  expect((await scrape()).sum("cellwire_edge_nats_connected")).toBe(0);
  await server.restart();
  await until("/readyz 200", async () => (await readiness()).status === 200);
  expect((await scrape()).sum("cellwire_edge_nats_connected")).toBe(1);
}, 60_000);

it("answers /readyz 503 while the edge drains", async () => {
  onTestFailed(printOutput);
  expect((await readiness()).status).toBe(200);
  const edgeExited = topology().topology.signal("cellwire-edge-1", "SIGTERM");
  await until("/readyz 503 while draining", async () => (await readiness()).status === 503);
  const draining = await readiness();
  expect(draining.checks["sessions"]?.ok).toBe(false);
  expect(draining.checks["nats"]?.ok).toBe(true);
  expect(await edgeExited).toBe(0);
}, 60_000);
