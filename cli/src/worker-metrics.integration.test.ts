// Workers and the directory on their admin listeners (issue 13, items 1 and 4; docs/decisions/0032): a
// topology on a private nats-server and a private redis-server (this test stops both) chats, then each
// worker's and the directory's /metrics is scraped and parsed as a scraper would, and the counts match
// what was done. Then each dependency is broken in turn: the cell's database refuses connections (the
// workers' /readyz names the database, then the lease they give up), NATS crashes (every process names
// NATS), Redis stops (the directory names Redis); each time /readyz answers 200 again once it is back.
import { afterAll, beforeAll, expect, it, onTestFailed } from "vitest";
import pg from "pg";
import { cellDatabaseName } from "@cellwire/protocol";
import { parsePrometheusText, pollUntil, type PrometheusScrape } from "@cellwire/testkit";
import { RecordedRun } from "../test/recorded-run.ts";
import { startPrivateRedis, type PrivateRedis } from "../test/redis-server.ts";
import { startPrivateNatsServer, type PrivateNatsServer } from "./private-nats-server.ts";
import { placeUsers, startTestTopology, testServices, type TestTopology } from "./test-topology.ts";

const cellId = "a";
const sendsPerUser = 5;
const deadlineMs = 30_000;

let nats: PrivateNatsServer | undefined;
let redis: PrivateRedis | undefined;
let test: TestTopology | undefined;
const run = new RecordedRun();

function required<T>(value: T | undefined, what: string): T {
  if (value === undefined) throw new Error(`${what} did not start`);
  return value;
}

/** The admin ports the launcher recorded from each process's ready message. */
function adminPorts(): { readonly workers: readonly number[]; readonly directory: number } {
  const processes = required(test, "the topology").topology.processes();
  const workers = processes.filter((running) => running.processName.startsWith("cellwire-worker-")).map((running) => running.adminPort);
  const directory = processes.find((running) => running.processName === "cellwire-directory")?.adminPort;
  if (workers.length !== 2 || workers.some((port) => port === undefined) || directory === undefined)
    throw new Error(`the launcher has no admin port for some process: ${JSON.stringify(processes)}`);
  return { workers: workers as number[], directory };
}

async function get(port: number, path: string): Promise<{ readonly status: number; readonly text: string }> {
  const response = await fetch(`http://127.0.0.1:${port}${path}`);
  return { status: response.status, text: await response.text() };
}

async function scrape(port: number): Promise<PrometheusScrape> {
  const { status, text } = await get(port, "/metrics");
  expect(status).toBe(200);
  return parsePrometheusText(text);
}

type Readiness = { readonly status: number; readonly failing: readonly string[] };

/** /readyz's status and the names of its failing checks (its body is unknown until read). */
async function readiness(port: number): Promise<Readiness> {
  const { status, text } = await get(port, "/readyz");
  const body: unknown = JSON.parse(text);
  const checks = typeof body === "object" && body !== null ? (body as { checks?: unknown }).checks : undefined;
  if (typeof checks !== "object" || checks === null) throw new Error(`/readyz answered ${text}`);
  const failing = Object.entries(checks as Record<string, unknown>)
    .filter(([, check]) => typeof check === "object" && check !== null && (check as { ok?: unknown }).ok !== true)
    .map(([name]) => name)
    .sort();
  return { status, failing };
}

/** Waits until every port's /readyz satisfies `wanted`. */
function untilReadiness(what: string, ports: readonly number[], wanted: (readiness: Readiness) => boolean): Promise<Readiness[]> {
  let last: Readiness[] = [];
  return pollUntil(
    what,
    async () => {
      last = await Promise.all(ports.map((port) => readiness(port)));
      return last.every(wanted) ? last : undefined;
    },
    { deadlineMs, intervalMs: 100, detail: () => `last /readyz: ${JSON.stringify(last)}` },
  );
}

function printOutput(): void {
  process.stdout.write(`${(test?.output ?? []).slice(-80).join("\n")}\n`);
}

const ready = (readiness: Readiness): boolean => readiness.status === 200 && readiness.failing.length === 0;

/** Sets whether the cell's database takes connections; refusing ends the sessions it has too. */
async function cellDatabaseAllowsConnections(allowed: boolean): Promise<void> {
  const name = cellDatabaseName(required(test, "the topology").namespace, cellId);
  const client = new pg.Client({ connectionString: testServices.postgresAdminUrl });
  await client.connect();
  try {
    // ALLOW_CONNECTIONS binds superusers too (the workers connect as postgres), unlike a revoked CONNECT.
    await client.query(`alter database "${name}" allow_connections ${allowed ? "true" : "false"}`);
    if (!allowed) await client.query("select pg_terminate_backend(pid) from pg_stat_activity where datname = $1", [name]);
  } finally {
    await client.end();
  }
}

beforeAll(async () => {
  nats = await startPrivateNatsServer();
  redis = await startPrivateRedis();
  test = await startTestTopology({
    label: "wmetrics",
    natsServers: [nats.clientUrl],
    natsUsers: nats.users,
    redisUrl: redis.url,
    cells: [{ cellId, workerCount: 2 }],
    edgeCount: 1,
    // A database outage shows in /readyz within a second, and the lease goes after two.
    extraEnvironment: { WORKER_POSTGRES_PROBE_INTERVAL_MS: "250", WORKER_DATABASE_UNREACHABLE_MS: "2000" },
  });
  await placeUsers(test, [
    ["alice", cellId],
    ["bob", cellId],
  ]);
}, 120_000);

afterAll(async () => {
  run.closeAll();
  try {
    if (test !== undefined) await cellDatabaseAllowsConnections(true).catch(() => undefined);
    await test?.destroy();
  } finally {
    await nats?.stop();
    await redis?.destroy();
  }
}, 60_000);

it("counts what the workers and the directory did, in a text a scraper accepts, with no user or conversation in a label", async () => {
  onTestFailed(printOutput);
  const urls = required(test, "the topology").topology.edges.map((edge) => edge.webSocketUrl);
  const alice = await run.openDevice("alice", "phone", urls);
  const bob = await run.openDevice("bob", "phone", urls);
  const direct = await alice.client.openDirect("bob");
  run.conversation(direct.conversationId, direct.memberUserIds);
  for (let index = 0; index < sendsPerUser; index++) {
    await run.send(alice, direct.conversationId, `hello ${index}`, `alice-${index}`);
    await run.send(bob, direct.conversationId, `hi ${index}`, `bob-${index}`);
  }
  await run.settle(deadlineMs);

  const ports = adminPorts();
  // The relay applies the two joined events after the openDirect's ack: wait for them.
  const workers = await pollUntil(
    "the relay's mailbox appends",
    async () => {
      const scrapes = await Promise.all(ports.workers.map((port) => scrape(port)));
      return scrapes.reduce((sum, one) => sum + one.sum("cellwire_worker_mailbox_appends_total"), 0) >= 2 ? scrapes : undefined;
    },
    { deadlineMs, intervalMs: 100 },
  );
  const total = (name: string, labels?: Record<string, string>): number => workers.reduce((sum, one) => sum + one.sum(name, labels), 0);
  expect(total("cellwire_worker_requests_total", { kind: "send", outcome: "ok" })).toBe(2 * sendsPerUser + run.retries);
  expect(total("cellwire_worker_requests_total", { kind: "openDirect", outcome: "ok" })).toBe(1);
  expect(total("cellwire_worker_request_seconds_count", { kind: "sendBatch" })).toBeGreaterThanOrEqual(1);
  expect(total("cellwire_worker_send_batch_size_sum")).toBe(2 * sendsPerUser + run.retries);
  expect(total("cellwire_worker_statement_seconds_count", { statement: "append_messages" })).toBe(
    total("cellwire_worker_send_batch_size_count"),
  );
  expect(total("cellwire_worker_statement_seconds_count", { statement: "open_direct" })).toBe(1);
  expect(total("cellwire_worker_mailbox_appends_total")).toBe(2);
  expect(total("cellwire_worker_dead_letters_total")).toBe(0);
  // Each relayed row is a cell.appendMailbox request to the recipient's mailbox owner, timed by the worker;
  // the relay asked the directory for the recipients' homes on its cache's misses: resolveUser for a lone
  // one, resolveUsers for those of one turn (decision 0040).
  expect(total("cellwire_worker_cell_request_seconds_count", { kind: "cell.appendMailbox" })).toBeGreaterThanOrEqual(2);
  expect(
    total("cellwire_worker_directory_request_seconds_count", { operation: "resolveUser" }) +
      total("cellwire_worker_directory_request_seconds_count", { operation: "resolveUsers" }),
  ).toBeGreaterThanOrEqual(1);
  expect(total("cellwire_worker_directory_request_errors_total")).toBe(0);
  for (const [index, worker] of workers.entries()) {
    const processName = `cellwire-worker-${cellId}-${index + 1}`;
    expect(worker.sum("cellwire_worker_ring_members")).toBe(2);
    expect(worker.sum("cellwire_worker_ring_epoch")).toBeGreaterThan(0);
    expect(worker.sum("cellwire_worker_ring_changes_total")).toBeGreaterThanOrEqual(1);
    expect(worker.sum("cellwire_worker_owns_lease")).toBe(1);
    expect(worker.sum("cellwire_worker_nats_connected")).toBe(1);
    expect(worker.sum("cellwire_worker_lease_renewals_total", { outcome: "renewed" })).toBeGreaterThanOrEqual(1);
    expect(worker.sum("cellwire_worker_pg_pool_connections", { state: "total" })).toBeGreaterThanOrEqual(1);
    expect(worker.find("cellwire_worker_outbox_depth")[0]?.value).toBe(0);
    expect(worker.find("cellwire_process_cpu_user_seconds_total", { service: "worker", process: processName })).toHaveLength(1);
    expect(worker.types.get("cellwire_worker_request_seconds")).toBe("histogram");
    // Every worker registered its cell with the directory at its start.
    expect(worker.sum("cellwire_worker_directory_request_seconds_count", { operation: "registerCell" })).toBeGreaterThanOrEqual(1);
    expect(worker.types.get("cellwire_worker_cell_request_seconds")).toBe("histogram");
  }

  const directory = await scrape(ports.directory);
  expect(directory.sum("cellwire_directory_requests_total", { operation: "assignUser", outcome: "ok" })).toBe(2);
  expect(directory.sum("cellwire_directory_requests_total", { operation: "registerCell", outcome: "ok" })).toBeGreaterThanOrEqual(2);
  expect(directory.sum("cellwire_directory_request_seconds_count", { operation: "assignUser" })).toBe(2);
  expect(directory.sum("cellwire_directory_redis_up")).toBe(1);
  expect(directory.find("cellwire_nodejs_eventloop_lag_seconds", { service: "directory", process: "cellwire-directory" })).toHaveLength(1);

  const labelValues = [...workers, directory].flatMap((one) => one.samples.flatMap((sample) => Object.values(sample.labels)));
  for (const secret of ["alice", "bob", direct.conversationId]) expect(labelValues.filter((value) => value.includes(secret))).toEqual([]);
}, 120_000);

it("a worker whose database refuses it is not ready, naming the database and then the lease it gives up; ready again once it answers", async () => {
  onTestFailed(printOutput);
  const ports = adminPorts();
  await untilReadiness("everyone ready", [...ports.workers, ports.directory], ready);
  for (const port of ports.workers) expect((await get(port, "/livez")).status).toBe(200);
  await cellDatabaseAllowsConnections(false);
  try {
    await untilReadiness(
      "the workers to name the database",
      ports.workers,
      (one) => one.status === 503 && one.failing.includes("database"),
    );
    await untilReadiness(
      "the workers to give up their leases",
      ports.workers,
      (one) => one.status === 503 && one.failing.includes("lease"),
    );
    // Alive all along, and the directory does not depend on the cell's database.
    for (const port of ports.workers) expect((await get(port, "/livez")).status).toBe(200);
    expect(ready(await readiness(ports.directory))).toBe(true);
  } finally {
    await cellDatabaseAllowsConnections(true);
  }
  await untilReadiness("the workers ready again", ports.workers, ready);
}, 120_000);

it("without NATS every worker and the directory is not ready, naming NATS; ready again once it is back", async () => {
  onTestFailed(printOutput);
  const server = required(nats, "nats");
  const ports = adminPorts();
  const everyone = [...ports.workers, ports.directory];
  await untilReadiness("everyone ready", everyone, ready);
  await server.crash();
  try {
    await untilReadiness("everyone to name NATS", everyone, (one) => one.status === 503 && one.failing.includes("nats"));
    for (const port of ports.workers) expect((await scrape(port)).sum("cellwire_worker_nats_connected")).toBe(0);
  } finally {
    await server.restart();
  }
  await untilReadiness("everyone ready again", everyone, ready);
}, 120_000);

it("without Redis the directory is not ready, naming Redis, and the workers stay ready; ready again once it is back", async () => {
  onTestFailed(printOutput);
  const server = required(redis, "redis");
  const ports = adminPorts();
  await untilReadiness("everyone ready", [...ports.workers, ports.directory], ready);
  await server.stop();
  try {
    const [directory] = await untilReadiness("the directory to name Redis", [ports.directory], (one) => one.status === 503);
    expect(directory?.failing).toEqual(["redis"]);
    expect(parsePrometheusText((await get(ports.directory, "/metrics")).text).sum("cellwire_directory_redis_up")).toBe(0);
    for (const port of ports.workers) expect(ready(await readiness(port))).toBe(true);
  } finally {
    await server.start();
  }
  await untilReadiness("the directory ready again", [ports.directory], ready);
}, 120_000);

it("a killed worker's lease expires: the survivor deletes it, counts the expiry and sees a ring of one", async () => {
  onTestFailed(printOutput);
  const topology = required(test, "the topology").topology;
  const [survivorPort] = adminPorts().workers;
  if (survivorPort === undefined) throw new Error("no worker admin port");
  const before = await scrape(survivorPort);
  await topology.signal(`cellwire-worker-${cellId}-2`, "SIGKILL");
  const after = await pollUntil(
    "the survivor to see a ring of one",
    async () => {
      const scraped = await scrape(survivorPort);
      return scraped.sum("cellwire_worker_ring_members") === 1 ? scraped : undefined;
    },
    { deadlineMs, intervalMs: 100 },
  );
  expect(after.sum("cellwire_worker_lease_expiries_total")).toBe(before.sum("cellwire_worker_lease_expiries_total") + 1);
  expect(after.sum("cellwire_worker_ring_changes_total")).toBeGreaterThan(before.sum("cellwire_worker_ring_changes_total"));
  expect(after.sum("cellwire_worker_ring_epoch")).toBeGreaterThan(before.sum("cellwire_worker_ring_epoch"));
}, 60_000);
