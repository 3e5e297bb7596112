// The admin HTTP API on a real topology (a private NATS with the shipped permissions, the directory, cells
// a and b, an edge and cellwire-admin as the launcher starts it): every endpoint refuses a request without
// the token or with a wrong one and answers with it; and the commands with --admin-url print what they print
// over NATS (ring, cells, whereis, migrate, drain, revoke, dead-letters).
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { NatsConnection } from "@nats-io/transport-node";
import { decodeMessage } from "@cellwire/cluster";
import { revocationsSubject, sessionRevoke } from "@cellwire/protocol";
import { parsePrometheusText, type PrometheusScrape } from "@cellwire/testkit";
import { runCli } from "../test/run-cli.ts";
import { placeUsers, startTestTopology, type TestTopology } from "./test-topology.ts";

let test: TestTopology;
let api: { url: string; token: string };
let direct: Record<string, string>;
let overApi: Record<string, string>;

beforeAll(async () => {
  test = await startTestTopology({
    label: "admin",
    cells: [
      { cellId: "a", workerCount: 1 },
      { cellId: "b", workerCount: 1 },
    ],
    edgeCount: 1,
    adminApi: true,
  });
  const started = test.adminApi;
  if (started === undefined) throw new Error("the topology started no admin API");
  api = started;
  await placeUsers(test, [
    ["alice", "a"],
    ["bob", "b"],
    ["carol", "b"],
  ]);
  direct = { CELLWIRE_NAMESPACE: test.namespace, ...test.natsEnvironment("admin"), CELLWIRE_ADMIN_URL: "" };
  // No NATS settings at all: the API is the only way in.
  overApi = { CELLWIRE_NAMESPACE: "nowhere", CELLWIRE_NATS_SERVERS: "127.0.0.1:1", CELLWIRE_ADMIN_TOKEN: api.token };
});

afterAll(async () => {
  await test?.destroy();
});

async function cli(args: readonly string[], environment: Record<string, string>) {
  return runCli(args, undefined, environment).done;
}

/** The same command over NATS and with --admin-url. */
async function both(args: readonly string[]) {
  const viaNats = await cli(args, direct);
  const viaApi = await cli([...args, "--admin-url", api.url], overApi);
  return { viaNats, viaApi };
}

type Call = { method: "GET" | "POST"; path: string; body?: unknown };
const endpoints: Call[] = [
  { method: "GET", path: "/v1/cells" },
  { method: "POST", path: "/v1/cells", body: { cellId: "a" } },
  { method: "GET", path: "/v1/cells/a/ring" },
  { method: "POST", path: "/v1/cells/a/drain", body: {} },
  { method: "GET", path: "/v1/whereis?user=alice" },
  { method: "POST", path: "/v1/migrations", body: { kind: "user", id: "alice", toCellId: "b" } },
  { method: "POST", path: "/v1/revoke", body: { userId: "alice" } },
  { method: "GET", path: "/v1/dead-letters?cell=a" },
  { method: "POST", path: "/v1/dead-letters/redrive", body: { cellId: "a", ids: [1] } },
];

function send(call: Call, authorization: string | undefined): Promise<Response> {
  return fetch(`${api.url}${call.path}`, {
    method: call.method,
    headers: {
      ...(authorization === undefined ? {} : { authorization }),
      ...(call.body === undefined ? {} : { "content-type": "application/json" }),
    },
    ...(call.body === undefined ? {} : { body: JSON.stringify(call.body) }),
  });
}

describe("the admin API on a running topology", () => {
  it("refuses every endpoint without the token or with a wrong one, and changes nothing", async () => {
    for (const call of endpoints) {
      for (const authorization of [undefined, `Bearer ${"w".repeat(43)}`, `Bearer ${api.token}x`, api.token]) {
        const response = await send(call, authorization);
        expect(response.status, `${call.method} ${call.path} ${String(authorization).slice(0, 12)}`).toBe(401);
        expect(await response.json()).toMatchObject({ error: { code: "unauthorized" } });
      }
    }
    // Nothing moved, nothing drained.
    const whereis = await send({ method: "GET", path: "/v1/whereis?user=alice" }, `Bearer ${api.token}`);
    expect(await whereis.json()).toMatchObject({ userId: "alice", placed: true, cellId: "a" });
    const cells = await send({ method: "GET", path: "/v1/cells" }, `Bearer ${api.token}`);
    expect(await cells.json()).toEqual({
      namespace: test.namespace,
      cells: [
        { cellId: "a", weight: expect.any(Number) as number, state: "active" },
        { cellId: "b", weight: expect.any(Number) as number, state: "active" },
      ],
    });
  });

  it("answers the read-only endpoints with the token; bad input is a 400, an unknown cell a 404", async () => {
    const bearer = `Bearer ${api.token}`;
    const ring = await send({ method: "GET", path: "/v1/cells/b/ring" }, bearer);
    expect(ring.status).toBe(200);
    expect(await ring.json()).toMatchObject({
      cellId: "b",
      namespace: test.namespace,
      members: [{ workerId: "b-1", live: true, share: 1 }],
    });
    const deadLetters = await send({ method: "GET", path: "/v1/dead-letters" }, bearer);
    expect(await deadLetters.json()).toMatchObject({
      namespace: test.namespace,
      cellIds: ["a", "b"],
      deadLetters: [],
      unreachableCellIds: [],
    });
    const redriven = await send({ method: "POST", path: "/v1/dead-letters/redrive", body: { cellId: "a", ids: [987654] } }, bearer);
    expect(await redriven.json()).toEqual({ cellId: "a", redrivenRows: 0 });
    const unknown = await send({ method: "GET", path: "/v1/cells/zz/ring" }, bearer);
    expect([unknown.status, await unknown.json()]).toEqual([
      404,
      { error: { code: "not_found", message: `cell zz has no membership bucket in namespace ${test.namespace} (never started?)` } },
    ]);
    const bad = await send({ method: "POST", path: "/v1/migrations", body: { kind: "user", id: "alice", toCellId: "B" } }, bearer);
    expect([bad.status, await bad.json()]).toEqual([400, { error: { code: "invalid_input", message: '"B" is not a cell id' } }]);
    const registered = await send({ method: "POST", path: "/v1/cells", body: { cellId: "a" } }, bearer);
    expect(registered.status).toBe(409);
    expect(await registered.json()).toMatchObject({
      error: { code: "conflict", message: expect.stringMatching(/^cell a is already registered/) as string },
    });
  });

  it("answers /readyz without the token, and /metrics with it: Node's, the NATS connection's and its requests, counted", async () => {
    const ready = await fetch(`${api.url}/readyz`);
    expect([ready.status, await ready.json()]).toEqual([200, { ready: true, checks: { nats: { ok: true, decidesReadiness: true } } }]);
    expect((await fetch(`${api.url}/metrics`)).status).toBe(401);
    const scrape = async (): Promise<PrometheusScrape> => {
      const response = await fetch(`${api.url}/metrics`, { headers: { authorization: `Bearer ${api.token}` } });
      expect(response.status).toBe(200);
      const text = await response.text();
      // Labels are closed sets: no user a request named shows.
      expect(text).not.toContain("alice");
      return parsePrometheusText(text);
    };
    const before = await scrape();
    const ring = await send({ method: "GET", path: "/v1/cells/a/ring" }, `Bearer ${api.token}`);
    expect(ring.status).toBe(200);
    await send({ method: "GET", path: "/v1/whereis?user=alice" }, undefined);
    const after = await scrape();
    const ringOk = { operation: "ring", outcome: "ok" };
    expect(after.sum("cellwire_admin_requests_total", ringOk) - before.sum("cellwire_admin_requests_total", ringOk)).toBe(1);
    const refused = { operation: "none", outcome: "unauthorized" };
    expect(after.sum("cellwire_admin_requests_total", refused) - before.sum("cellwire_admin_requests_total", refused)).toBe(1);
    expect(after.sum("cellwire_admin_request_seconds_count", { operation: "ring" })).toBeGreaterThanOrEqual(1);
    expect(after.find("cellwire_admin_requests_in_flight")).toEqual([
      { name: "cellwire_admin_requests_in_flight", labels: { service: "admin", process: "cellwire-admin" }, value: 0 },
    ]);
    // connectNats was given the registry: the connection's losses and recoveries are counted (none here).
    for (const name of ["cellwire_nats_disconnects_total", "cellwire_nats_reconnects_total"])
      expect(after.find(name, { service: "admin" }).map((sample) => sample.value)).toEqual([0]);
    expect(after.find("cellwire_process_resident_memory_bytes", { service: "admin", process: "cellwire-admin" })).toHaveLength(1);
  });

  it("publishes a revocation edges receive", async () => {
    const edgeConnection: NatsConnection = await test.connectNats("edge");
    try {
      const subscription = edgeConnection.subscribe(revocationsSubject(test.namespace), { max: 1 });
      await edgeConnection.flush();
      const response = await send({ method: "POST", path: "/v1/revoke", body: { userId: "mallory" } }, `Bearer ${api.token}`);
      expect(response.status).toBe(200);
      const report = (await response.json()) as { userId: string; revokedAtMs: number };
      for await (const message of subscription) {
        const decoded = decodeMessage(sessionRevoke, message.data);
        expect(decoded).toEqual({ ok: true, value: { type: "session.revoke", userId: "mallory", revokedAtMs: report.revokedAtMs } });
      }
    } finally {
      await edgeConnection.close();
    }
  });
});

describe("the commands with --admin-url print what they print over NATS", () => {
  it("cells, whereis and dead-letters list: the same output and status", async () => {
    for (const args of [
      ["cells"],
      ["cells", "--json"],
      ["whereis", "alice"],
      ["whereis", "alice", "--json"],
      ["whereis", "nobody"],
      ["whereis", "x.y"],
      ["dead-letters", "list", "--json"],
      ["dead-letters", "list"],
    ]) {
      const { viaNats, viaApi } = await both(args);
      expect(viaNats.status, `${args.join(" ")}: ${viaNats.stderr}`).toBe(args[1] === "nobody" ? 1 : args[1] === "x.y" ? 2 : 0);
      expect(viaApi, args.join(" ")).toEqual(viaNats);
    }
  });

  it("ring: the same members, states and shares (lease ages go on ticking), and the same refusal of an unknown cell", async () => {
    const { viaNats, viaApi } = await both(["ring", "a", "--json"]);
    expect([viaNats.status, viaApi.status]).toEqual([0, 0]);
    const withoutAges = (stdout: string): unknown => {
      const report = JSON.parse(stdout) as { members: { leaseAgeMs?: number }[] };
      return { ...report, members: report.members.map(({ leaseAgeMs: _age, ...member }) => member) };
    };
    expect(withoutAges(viaApi.stdout)).toEqual(withoutAges(viaNats.stdout));
    const text = await both(["ring", "a"]);
    expect(text.viaApi.stdout.split("\n")[0]).toBe(`cell a (namespace ${test.namespace}): 1 live of 1 leases`);
    expect(text.viaApi.stdout.split("\n")[0]).toBe(text.viaNats.stdout.split("\n")[0]);
    const unknown = await both(["ring", "zz"]);
    expect(unknown.viaApi).toEqual(unknown.viaNats);
    expect(unknown.viaApi.status).toBe(1);
  });

  it("migrate: moves a user there and back, each way reporting the same shape", async () => {
    const there = await cli(["migrate", "alice", "b", "--json"], direct);
    expect(there.status, there.stderr).toBe(0);
    const back = await cli(["migrate", "alice", "a", "--json", "--admin-url", api.url], overApi);
    expect(back.status, back.stderr).toBe(0);
    const thereReport = JSON.parse(there.stdout) as Record<string, unknown>;
    const backReport = JSON.parse(back.stdout) as Record<string, unknown>;
    expect(Object.keys(backReport).sort()).toEqual(Object.keys(thereReport).sort());
    expect(thereReport).toMatchObject({ kind: "user", id: "alice", fromCellId: "a", toCellId: "b", alreadyMoved: false });
    expect(backReport).toMatchObject({ kind: "user", id: "alice", fromCellId: "b", toCellId: "a", alreadyMoved: false });
    expect(await cli(["whereis", "alice", "--admin-url", api.url], overApi)).toMatchObject({
      status: 0,
      stdout: expect.stringContaining("lives in cell a") as string,
    });
    const already = await both(["migrate", "alice", "a"]);
    expect(already.viaApi).toEqual(already.viaNats);
    expect(already.viaApi.stdout).toMatch(/^user alice already lives in cell a \(entry epoch \d+\)\n$/);
    const refused = await both(["migrate", "alice", "Z"]);
    expect(refused.viaApi).toEqual(refused.viaNats);
    expect(refused.viaApi).toMatchObject({ status: 2, stderr: 'cellwire: "Z" is not a cell id\n' });
  });

  it("revoke: the same sentence", async () => {
    const { viaNats, viaApi } = await both(["revoke", "mallory"]);
    const withoutTime = (stdout: string): string => stdout.replace(/before \S+ are/, "before … are");
    expect([viaNats.status, viaApi.status]).toEqual([0, 0]);
    expect(withoutTime(viaApi.stdout)).toBe(withoutTime(viaNats.stdout));
  });

  it("drain: streams its progress to stderr and ends with the drained cell's summary", async () => {
    const drained = await cli(["drain", "b", "--concurrency", "2", "--json", "--admin-url", api.url], overApi);
    expect(drained.status, drained.stderr).toBe(0);
    expect(drained.stderr).toContain("draining cell b: it takes no new users or conversations from now on\n");
    expect(drained.stderr).toMatch(/drain b: pass 1, \d+ users and \d+ conversations moved, 0 failed/);
    expect(JSON.parse(drained.stdout)).toMatchObject({ cellId: "b", movedUsers: 2, movedConversations: 0 });
    for (const userId of ["bob", "carol"]) {
      expect(await cli(["whereis", userId, "--json"], direct).then((run) => JSON.parse(run.stdout) as unknown)).toMatchObject({
        cellId: "a",
      });
    }
    const cells = await cli(["cells", "--json", "--admin-url", api.url], overApi);
    expect(JSON.parse(cells.stdout)).toMatchObject({
      cells: [
        { cellId: "a", state: "active" },
        { cellId: "b", state: "draining" },
      ],
    });
  });

  it("says so when the token is missing or refused", async () => {
    const missing = await cli(["cells", "--admin-url", api.url], { ...overApi, CELLWIRE_ADMIN_TOKEN: "" });
    expect(missing.status).toBe(2);
    expect(missing.stderr).toContain("CELLWIRE_ADMIN_TOKEN");
    const refused = await cli(["cells"], { ...overApi, CELLWIRE_ADMIN_URL: api.url, CELLWIRE_ADMIN_TOKEN: "r".repeat(43) });
    expect(refused.status).toBe(1);
    expect(refused.stderr).toMatch(/^cellwire: the admin API answered 401 unauthorized/);
  });
});
