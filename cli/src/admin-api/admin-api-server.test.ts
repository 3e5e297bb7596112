// The admin API over a real socket on port 0, with recording operations behind it: the token check, the
// error answers, the NDJSON progress streams, and the HTTP operations (what the commands use with
// --admin-url) reading all of it back as the operations' own reports and errors.
import { request as httpRequest } from "node:http";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { createServiceMetrics, type ServiceMetrics } from "@cellwire/cluster";
import { parsePrometheusText } from "@cellwire/testkit";
import { RecordingOperations } from "../../test/recording-operations.ts";
import { OperationError } from "../operations.ts";
import {
  adminApiProcessName,
  adminApiReadiness,
  bearerTokenMatches,
  ndjsonContentType,
  requestBodyBytesMax,
  startAdminApi,
  tokenDigest,
  type AdminApi,
  type AdminApiOptions,
} from "./admin-api-server.ts";
import { AdminApiError, HttpOperations } from "./http-operations.ts";
import { redriveRequestIdsMax } from "./routes.ts";

const token = "t".repeat(20) + "0123456789abcdef";
const metricsToken = "m".repeat(20) + "0123456789abcdef";
let api: AdminApi;
let operations: RecordingOperations;
let baseUrl: string;
const logLines: string[] = [];
let natsConnected = true;

/** What every API of these tests shares but the operations and the limit: a registry of its own, and a NATS link the test flips. */
function apiOptions(
  operations: RecordingOperations,
  overrides: Partial<AdminApiOptions> = {},
): AdminApiOptions & { serviceMetrics: ServiceMetrics } {
  return {
    host: "127.0.0.1",
    port: 0,
    token,
    metricsToken,
    operations,
    logger: { info: () => {}, warn: () => {} },
    serviceMetrics: createServiceMetrics("admin", adminApiProcessName),
    readiness: adminApiReadiness(() => natsConnected),
    ...overrides,
  };
}

beforeEach(async () => {
  operations = new RecordingOperations();
  logLines.length = 0;
  natsConnected = true;
  const logger = { info: (message: string, fields?: object) => void logLines.push(`${message} ${JSON.stringify(fields)}`), warn: () => {} };
  api = await startAdminApi(apiOptions(operations, { logger, requestsInFlightMax: 2 }));
  baseUrl = `http://127.0.0.1:${api.port}`;
});

afterEach(async () => {
  await api.stop();
});

async function call(method: string, path: string, options: { token?: string | null; body?: string; contentType?: string } = {}) {
  const headers: Record<string, string> = {};
  if (options.token !== null) headers["authorization"] = `Bearer ${options.token ?? token}`;
  if (options.body !== undefined) headers["content-type"] = options.contentType ?? "application/json";
  const response = await fetch(`${baseUrl}${path}`, { method, headers, ...(options.body === undefined ? {} : { body: options.body }) });
  const text = await response.text();
  return { status: response.status, headers: response.headers, text, json: (): unknown => JSON.parse(text) };
}

describe("bearerTokenMatches", () => {
  const digest = tokenDigest(token);
  it("accepts exactly `Bearer <token>` (the scheme in any case)", () => {
    expect(bearerTokenMatches(`Bearer ${token}`, digest)).toBe(true);
    expect(bearerTokenMatches(`bearer ${token}`, digest)).toBe(true);
  });
  it("refuses a missing, different, longer, shorter or differently framed token", () => {
    for (const header of [
      undefined,
      "",
      token,
      `Bearer ${token}x`,
      `Bearer ${token.slice(1)}`,
      `Basic ${token}`,
      `Bearer  ${token}`,
      `Bearer ${token} `,
    ]) {
      expect(bearerTokenMatches(header, digest), String(header)).toBe(false);
    }
  });
});

describe("the admin API's boundary", () => {
  it("answers 401 without the token or with a wrong one, before routing, and never calls the operations", async () => {
    for (const candidate of [null, "wrong", `${token}x`]) {
      for (const path of ["/v1/cells", "/v1/nope"]) {
        const response = await call("GET", path, { token: candidate });
        expect(response.status, `${String(candidate)} ${path}`).toBe(401);
        expect(response.json()).toEqual({ error: { code: "unauthorized", message: expect.any(String) as string } });
        expect(response.headers.get("www-authenticate")).toMatch(/^Bearer/);
      }
    }
    expect(operations.calls).toEqual([]);
  });

  it("serves /livez without the token", async () => {
    expect((await call("GET", "/livez", { token: null })).status).toBe(200);
  });

  it("answers 404, 405 and 400 with a documented error body", async () => {
    expect(await call("GET", "/v1/nope").then((response) => [response.status, response.json()])).toEqual([
      404,
      { error: { code: "unknown_path", message: expect.any(String) as string } },
    ]);
    const wrongMethod = await call("DELETE", "/v1/cells");
    expect(wrongMethod.status).toBe(405);
    expect(wrongMethod.headers.get("allow")).toBe("GET, POST");
    const bad = await call("POST", "/v1/migrations", { body: JSON.stringify({ kind: "user", id: "alice" }) });
    expect([bad.status, bad.json()]).toEqual([400, { error: { code: "invalid_input", message: "$.toCellId must be a string" } }]);
    expect((await call("POST", "/v1/migrations", { body: "{not json" })).json()).toEqual({
      error: { code: "invalid_input", message: "the body is not valid JSON" },
    });
    expect((await call("POST", "/v1/revoke", { body: '{"userId":"a"}', contentType: "text/plain" })).status).toBe(415);
    expect(operations.calls).toEqual([]);
  });

  it("refuses a body over the bound with 413 without reading it all", async () => {
    const response = await new Promise<{ status: number | undefined; body: string }>((resolve, reject) => {
      const outgoing = httpRequest(`${baseUrl}/v1/revoke`, {
        method: "POST",
        headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
      });
      outgoing.on("response", (incoming) => {
        let body = "";
        incoming.on("data", (chunk: Buffer) => (body += chunk.toString()));
        incoming.on("end", () => resolve({ status: incoming.statusCode, body }));
      });
      outgoing.on("error", reject);
      // No content-length: the body is counted as it arrives.
      outgoing.write(`{"userId":"${"a".repeat(requestBodyBytesMax)}`);
      outgoing.end('"}');
    });
    expect(response.status).toBe(413);
    expect(JSON.parse(response.body)).toMatchObject({ error: { code: "payload_too_large" } });
    expect(operations.calls).toEqual([]);
  });

  it("maps operation errors to their statuses and keeps their sentences", async () => {
    const cases: [OperationError, number][] = [
      [new OperationError("not_found", "cell z has no membership bucket in namespace ns (never started?)"), 404],
      [new OperationError("conflict", "cell c is already registered (active, weight 100)"), 409],
      [new OperationError("unavailable", "the directory of namespace ns did not answer (is the topology running?)"), 503],
      [new OperationError("failed", "gave up moving user alice after 8 attempts"), 502],
    ];
    for (const [error, status] of cases) {
      operations.failure = error;
      const response = await call("GET", "/v1/cells/a/ring");
      expect([response.status, response.json()]).toEqual([status, { error: { code: error.code, message: error.message } }]);
    }
    operations.failure = new Error("a bug with a secret inside");
    const internal = await call("GET", "/v1/cells");
    expect([internal.status, internal.text.includes("secret")]).toEqual([500, false]);
  });

  it("streams drain progress as NDJSON, then the result", async () => {
    const response = await call("POST", "/v1/cells/b/drain", { body: JSON.stringify({ concurrency: 3 }) });
    expect(response.status).toBe(200);
    expect(response.headers.get("content-type")).toBe(ndjsonContentType);
    const lines = response.text
      .trimEnd()
      .split("\n")
      .map((line) => JSON.parse(line) as unknown);
    expect(lines).toEqual([
      { type: "progress", progress: { movedUsers: 1, movedConversations: 0, failed: 0, elapsedMs: 12.5, pass: 1 } },
      { type: "result", result: expect.objectContaining({ cellId: "b", movedUsers: 1 }) as unknown },
    ]);
    expect(operations.calls).toEqual([{ operation: "drain", arguments: ["b", 3] }]);
  });

  it("ends a stream that began with an error line; one refused before any progress gets its own status", async () => {
    operations.failure = new OperationError("failed", "drain of cell b is not complete: cell b still homes 1 users");
    const afterProgress = await call("POST", "/v1/cells/b/drain", { body: "{}" });
    expect(afterProgress.status).toBe(200);
    expect(afterProgress.text.trimEnd().split("\n").at(-1)).toBe(
      JSON.stringify({ type: "error", error: { code: "failed", message: "drain of cell b is not complete: cell b still homes 1 users" } }),
    );
    operations.addCellProgress = [];
    operations.failure = new OperationError("conflict", "cell c is already registered (active, weight 100)");
    const refused = await call("POST", "/v1/cells", { body: JSON.stringify({ cellId: "c" }) });
    expect([refused.status, refused.json()]).toEqual([
      409,
      { error: { code: "conflict", message: "cell c is already registered (active, weight 100)" } },
    ]);
  });

  it("answers 503 busy past its requests in flight, and takes requests again once they end", async () => {
    const gates: (() => void)[] = [];
    const held = new RecordingOperations();
    held.cells = () => new Promise((resolve) => gates.push(() => resolve({ namespace: "ns", cells: [] })));
    const limited = await startAdminApi(apiOptions(held, { requestsInFlightMax: 2 }));
    try {
      const ask = (): Promise<Response> =>
        fetch(`http://127.0.0.1:${limited.port}/v1/cells`, { headers: { authorization: `Bearer ${token}` } });
      const first = ask();
      const second = ask();
      while (gates.length < 2) await new Promise((resolve) => setImmediate(resolve));
      const third = await ask();
      expect([third.status, third.headers.get("retry-after"), await third.json()]).toEqual([
        503,
        "1",
        { error: { code: "busy", message: "2 requests are in flight; try again when one ends" } },
      ]);
      for (const open of gates.splice(0)) open();
      expect([(await first).status, (await second).status]).toEqual([200, 200]);
      const fourth = ask();
      while (gates.length < 1) await new Promise((resolve) => setImmediate(resolve));
      gates[0]?.();
      expect((await fourth).status).toBe(200);
    } finally {
      await limited.stop();
    }
  });

  it("logs each request's method, path and status, never its query or token", async () => {
    await call("GET", "/v1/whereis?user=alice");
    expect(logLines.join("\n")).toContain('"path":"/v1/whereis","status":200');
    expect(logLines.join("\n")).not.toContain("alice");
    expect(logLines.join("\n")).not.toContain(token);
  });
});

describe("the admin API's probes and metrics", () => {
  it("answers /readyz without the token: 200 while NATS is connected, 503 with the check's detail while not", async () => {
    const ready = await call("GET", "/readyz", { token: null });
    expect([ready.status, ready.json()]).toEqual([200, { ready: true, checks: { nats: { ok: true, decidesReadiness: true } } }]);
    natsConnected = false;
    const unready = await call("GET", "/readyz", { token: null });
    expect([unready.status, unready.json()]).toEqual([
      503,
      { ready: false, checks: { nats: { ok: false, detail: "the NATS connection is down; reconnecting", decidesReadiness: true } } },
    ]);
    expect((await call("POST", "/readyz", { token: null })).status).toBe(405);
  });

  it("serves /metrics with the admin token or the metrics token, and refuses it without one; the metrics token opens nothing else", async () => {
    const refused = await call("GET", "/metrics", { token: null });
    expect([refused.status, refused.json()]).toEqual([401, { error: { code: "unauthorized", message: expect.any(String) as string } }]);
    expect((await call("GET", "/metrics", { token: "wrong".repeat(8) })).status).toBe(401);
    for (const bearer of [token, metricsToken]) {
      const scrape = await call("GET", "/metrics", { token: bearer });
      expect(scrape.status).toBe(200);
      expect(scrape.headers.get("content-type")).toMatch(/^text\/plain/);
      const parsed = parsePrometheusText(scrape.text);
      expect(parsed.find("cellwire_process_cpu_seconds_total", { service: "admin", process: adminApiProcessName })).toHaveLength(1);
    }
    expect((await call("GET", "/v1/cells", { token: metricsToken })).status).toBe(401);
    expect(operations.calls).toEqual([]);
  });

  it("counts requests by operation and outcome (none before routing), times them, and tells the requests in flight", async () => {
    await call("GET", "/v1/cells");
    await call("GET", "/v1/cells");
    operations.failure = new OperationError("not_found", "cell z has no membership bucket in namespace ns (never started?)");
    await call("GET", "/v1/cells/z/ring");
    operations.failure = new OperationError("failed", "drain of cell b is not complete: no other active cell");
    await call("POST", "/v1/cells/b/drain", { body: "{}" });
    operations.failure = undefined;
    await call("GET", "/v1/cells", { token: null });
    await call("GET", "/v1/nope");
    await call("DELETE", "/v1/cells");
    await call("POST", "/v1/migrations", { body: "{not json" });
    await call("GET", "/livez", { token: null });
    await call("GET", "/readyz", { token: null });
    const gates: (() => void)[] = [];
    operations.cells = () => new Promise((resolve) => gates.push(() => resolve({ namespace: "ns", cells: [] })));
    const held = call("GET", "/v1/cells");
    while (gates.length < 1) await new Promise((resolve) => setImmediate(resolve));
    const during = parsePrometheusText((await call("GET", "/metrics", { token: metricsToken })).text);
    gates[0]?.();
    await held;
    const after = parsePrometheusText((await call("GET", "/metrics", { token: metricsToken })).text);

    expect(during.sum("cellwire_admin_requests_in_flight")).toBe(1);
    expect(after.sum("cellwire_admin_requests_in_flight")).toBe(0);
    const counted = after
      .find("cellwire_admin_requests_total")
      .map((sample) => `${sample.labels["operation"]} ${sample.labels["outcome"]} ${sample.value}`)
      .sort();
    expect(counted).toEqual([
      "cells ok 3",
      "drain failed 1",
      "migrate invalid_input 1",
      "none method_not_allowed 1",
      "none unauthorized 1",
      "none unknown_path 1",
      "ring not_found 1",
    ]);
    expect(after.types.get("cellwire_admin_request_seconds")).toBe("histogram");
    expect(after.sum("cellwire_admin_request_seconds_count", { operation: "cells" })).toBe(3);
    expect(after.sum("cellwire_admin_request_seconds_count", { operation: "none" })).toBe(3);
    expect(after.sum("cellwire_admin_request_seconds_count")).toBe(9);
  });
});

describe("HttpOperations: the commands' operations over the API", () => {
  it("returns the operations' reports and passes every argument through", async () => {
    const client = new HttpOperations({ baseUrl: `${baseUrl}/`, token });
    expect(await client.cells()).toEqual(await new RecordingOperations().cells());
    expect((await client.ring("a")).members[0]?.workerId).toBe("a-1");
    expect(await client.whereis("alice")).toEqual({ userId: "alice", placed: true, cellId: "a", epoch: 3 });
    expect(await client.whereis("nobody")).toEqual({ userId: "nobody", placed: false });
    expect((await client.migrate("user", "alice", "b")).copiedItems).toBe(7);
    expect(await client.revoke("mallory")).toEqual({ userId: "mallory", revokedAtMs: 1_700_000_000_000 });
    expect((await client.deadLetters(undefined, 5)).cellIds).toEqual(["a"]);
    expect(await client.redrive("a", "all")).toEqual({ cellId: "a", redrivenRows: 2 });
    expect(await client.redrive("a", [4, 5])).toEqual({ cellId: "a", redrivenRows: 2 });
    const drained: unknown[] = [];
    expect((await client.drain("b", 2, (progress) => drained.push(progress))).cellId).toBe("b");
    expect(drained).toEqual([{ movedUsers: 1, movedConversations: 0, failed: 0, elapsedMs: 12.5, pass: 1 }]);
    const stages: unknown[] = [];
    expect((await client.addCell("c", 1, 10, (progress) => stages.push(progress))).workerIds).toEqual(["c-1"]);
    expect(stages).toEqual([{ stage: "starting" }, { stage: "started", workerIds: ["c-1"] }]);
    expect(operations.calls.map((call) => [call.operation, ...call.arguments])).toEqual([
      ["cells"],
      ["ring", "a"],
      ["whereis", "alice"],
      ["whereis", "nobody"],
      ["migrate", "user", "alice", "b"],
      ["revoke", "mallory"],
      ["deadLetters", undefined, 5],
      ["redrive", "a", "all"],
      ["redrive", "a", [4, 5]],
      ["drain", "b", 2],
      ["addCell", "c", 1, 10],
    ]);
  });

  it("sends a redrive of more ids than one request takes in several, each id once", async () => {
    const client = new HttpOperations({ baseUrl, token });
    const ids = [...Array.from({ length: redriveRequestIdsMax + 10 }, (_, index) => index + 1), 3];
    expect(await client.redrive("a", ids)).toEqual({ cellId: "a", redrivenRows: 4 });
    expect(operations.calls.map((call) => (call.arguments[1] as number[]).length)).toEqual([redriveRequestIdsMax, 10]);
  });

  it("throws the operation's own error, from a status or from the stream's last line", async () => {
    const client = new HttpOperations({ baseUrl, token });
    operations.failure = new OperationError("not_found", "cell z has no membership bucket in namespace ns (never started?)");
    await expect(client.ring("z")).rejects.toEqual(
      new OperationError("not_found", "cell z has no membership bucket in namespace ns (never started?)"),
    );
    await expect(client.ring("Z")).rejects.toMatchObject({
      name: "OperationError",
      code: "invalid_input",
      message: '"Z" is not a cell id',
    });
    operations.failure = new OperationError("failed", "drain of cell b is not complete: no other active cell");
    await expect(client.drain("b", 1, () => {})).rejects.toMatchObject({
      code: "failed",
      message: "drain of cell b is not complete: no other active cell",
    });
  });

  it("says so when the token is refused or the API cannot be reached", async () => {
    await expect(new HttpOperations({ baseUrl, token: "x".repeat(40) }).cells()).rejects.toThrow(AdminApiError);
    await expect(new HttpOperations({ baseUrl, token: "x".repeat(40) }).cells()).rejects.toThrow(/401 unauthorized/);
    await api.stop();
    await expect(new HttpOperations({ baseUrl, token }).cells()).rejects.toThrow(/could not be reached/);
    api = await startAdminApi(apiOptions(operations));
  });
});
