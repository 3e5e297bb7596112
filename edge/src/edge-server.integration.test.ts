// The real uWebSockets.js server in front of an EdgeCore built on in-memory fakes, over real sockets:
// the HTTP routes, the dev routes, static files, and what uWS itself enforces (frame size, binary frames).
import { execFile } from "node:child_process";
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import { WebSocket } from "ws";
import { closeCodes, frameBytesMax, protocolVersion, standardCloseCodes } from "@cellwire/protocol";
import { signDevToken } from "./auth/dev-keys.ts";
import { createTokenVerifier } from "./auth/token-verifier.ts";
import { Admission, type AdmissionOptions } from "./admission.ts";
import { startServer, type RunningServer } from "./edge-server.ts";
import { edgeReadinessChecks } from "./edge-health.ts";
import { EdgeMetrics } from "./edge-metrics.ts";
import { listeningSocketInodes } from "./listen-backlog.ts";
import { readinessReport } from "@cellwire/cluster";
import { parsePrometheusText } from "@cellwire/testkit";
import { fakeEdge, waitDeadlineMs, Waiters, type FakeEdge } from "../test/edge-fakes.ts";
import { loadNativeUws } from "./uws.ts";

const indexHtml = "<!doctype html><title>cellwire</title>";
const appJs = "console.log('cellwire');";

let temporaryDirectory: string;
let devKeyDirectory: string;
let edge: FakeEdge;
let server: RunningServer;
let ready = true;
let directoryUp = true;
let metrics: EdgeMetrics;
const sockets: TestSocket[] = [];

/** A WebSocket client that records every frame and the close, and waits for them with deadlines. */
class TestSocket {
  readonly frames: Record<string, unknown>[] = [];
  readonly binaryFrames: Buffer[] = [];
  closeCode: number | undefined;
  private readonly waiters = new Waiters();

  private constructor(private readonly socket: WebSocket) {
    socket.on("message", (data: Buffer, isBinary) => {
      if (isBinary) this.binaryFrames.push(data);
      else this.frames.push(JSON.parse(data.toString("utf8")) as Record<string, unknown>);
      this.notify();
    });
    socket.on("close", (code) => {
      this.closeCode = code;
      this.notify();
    });
  }

  static open(url: string, headers: Record<string, string> = {}): Promise<TestSocket> {
    const socket = new WebSocket(url, { headers });
    const test = new TestSocket(socket);
    sockets.push(test);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`could not open ${url} within ${waitDeadlineMs} ms`)), waitDeadlineMs);
      socket.once("open", () => {
        clearTimeout(timer);
        resolve(test);
      });
      socket.once("error", (error) => {
        clearTimeout(timer);
        reject(error);
      });
    });
  }

  send(data: string | Buffer): void {
    this.socket.send(data, { binary: typeof data !== "string" });
  }

  sendJson(frame: Record<string, unknown>): void {
    this.send(JSON.stringify(frame));
  }

  async frame(matches: (frame: Record<string, unknown>) => boolean): Promise<Record<string, unknown>> {
    await this.until(() => this.frames.some(matches) || this.closeCode !== undefined, "a matching frame");
    const frame = this.frames.find(matches);
    if (frame === undefined)
      throw new Error(`closed with ${String(this.closeCode)} before a matching frame; got ${JSON.stringify(this.frames)}`);
    return frame;
  }

  async closed(): Promise<number> {
    await this.until(() => this.closeCode !== undefined, "the close");
    return this.closeCode ?? 0;
  }

  close(): void {
    if (this.closeCode === undefined) this.socket.close();
  }

  private until(condition: () => boolean, what: string): Promise<void> {
    return this.waiters.until(condition, what);
  }

  private notify(): void {
    this.waiters.notify();
  }
}

function httpUrl(path: string): string {
  return `http://127.0.0.1:${server.port}${path}`;
}

async function authenticatedSocket(userId: string): Promise<TestSocket> {
  const socket = await TestSocket.open(`ws://127.0.0.1:${server.port}/ws`);
  socket.sendJson({ type: "hello", protocolVersion, token: `valid:${userId}` });
  await socket.frame((frame) => frame["type"] === "welcome");
  return socket;
}

beforeAll(async () => {
  temporaryDirectory = await mkdtemp(join(tmpdir(), "cellwire-edge-server-"));
  devKeyDirectory = join(temporaryDirectory, "dev-keys");
  const webDirectory = join(temporaryDirectory, "web");
  await mkdir(webDirectory);
  await writeFile(join(webDirectory, "index.html"), indexHtml);
  await writeFile(join(webDirectory, "app.js"), appJs);
  await writeFile(join(webDirectory, "notes.txt"), "not a web asset");
  metrics = new EdgeMetrics("cellwire-edge-server-test");
  edge = fakeEdge({}, { metrics });
  metrics.observe({
    sessions: () => edge.core.sessionCounts(),
    natsConnected: () => ready,
    directoryReachable: () => directoryUp,
  });
  server = await startServer(
    loadNativeUws(),
    edge.core,
    {
      host: "127.0.0.1",
      port: 0,
      idleTimeoutMs: 120_000,
      sendBufferBytesMax: 1024 * 1024,
      readiness: () =>
        readinessReport(
          edgeReadinessChecks({
            natsConnected: () => ready,
            accepting: () => true,
            directoryReachable: () => directoryUp,
          }),
        ),
      metrics,
      admission: new Admission(
        { allowedOrigins: [], loopbackOriginsAllowed: true, connectionsPerAddressMax: 1000, unauthenticatedMax: 1000, trustedProxies: [] },
        () => edge.core.unauthenticatedSessionCount,
      ),
    },
    {
      signToken: (userId, deviceId) => signDevToken(devKeyDirectory, userId, deviceId === undefined ? {} : { deviceId }),
      webDirectory,
    },
  );
});

afterAll(async () => {
  for (const socket of sockets) socket.close();
  edge?.core.closeAll();
  server?.stopListening();
  await rm(temporaryDirectory, { recursive: true, force: true });
});

/** The backlog of the socket listening on `port`, as `ss` shows it (Send-Q of a LISTEN row). */
function listenBacklogOf(port: number): Promise<number> {
  return new Promise((resolve, reject) => {
    execFile("ss", ["-Hltn", `sport = :${port}`], (error, stdout) => {
      if (error !== null) return reject(error);
      const sendQueue = Number(stdout.trim().split(/\s+/)[2]);
      if (!Number.isSafeInteger(sendQueue)) return reject(new Error(`ss printed ${JSON.stringify(stdout)}`));
      resolve(sendQueue);
    });
  });
}

describe("the listening socket", () => {
  it("has a backlog above uWebSockets.js's fixed 512: the kernel's cap, net.core.somaxconn", async () => {
    const somaxconn = Number((await import("node:fs")).readFileSync("/proc/sys/net/core/somaxconn", "utf8").trim());
    expect(await listenBacklogOf(server.port)).toBe(Math.min(somaxconn, 65_535));
    expect(somaxconn).toBeGreaterThan(512);
  });

  it("finds listening sockets by port in /proc/net/tcp text, and nothing else", () => {
    const table = [
      "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode",
      "   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4242 1 0000000000000000 100 0 0 10 0",
      "   1: 0100007F:1F90 0100007F:D431 01 00000000:00000000 00:00000000 00000000     0        0 4343 1 0000000000000000 20 4 30 10 -1",
      "   2: 0100007F:1F91 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4444 1 0000000000000000 100 0 0 10 0",
    ].join("\n");
    expect(listeningSocketInodes(table, 8080)).toEqual(["4242"]);
    expect(listeningSocketInodes(table, 9000)).toEqual([]);
  });
});

describe("HTTP routes", () => {
  it("listens on the port it picked", () => {
    expect(server.port).toBeGreaterThan(0);
  });

  it("answers /healthz with 200 and JSON that counts sessions, with /readyz's verdict and checks", async () => {
    const response = await fetch(httpUrl("/healthz"));
    expect(response.status).toBe(200);
    expect(response.headers.get("content-type")).toBe("application/json");
    expect(await response.json()).toEqual({
      status: "ok",
      sessions: edge.core.sessionCount,
      unauthenticatedSessions: edge.core.unauthenticatedSessionCount,
      refusals: { origin_not_allowed: 0, too_many_connections_from_address: 0, unauthenticated_full: 0, too_many_sessions: 0 },
      ready: true,
      checks: {
        nats: { ok: true, decidesReadiness: true },
        sessions: { ok: true, decidesReadiness: true },
        directory: { ok: true, decidesReadiness: false },
      },
    });
  });

  it("answers /readyz with 200 when ready and 503 when not, and stays ready without the directory", async () => {
    ready = true;
    const up = await fetch(httpUrl("/readyz"));
    expect(up.status).toBe(200);
    expect(await up.json()).toMatchObject({ ready: true });
    directoryUp = false;
    try {
      const withoutDirectory = await fetch(httpUrl("/readyz"));
      expect(withoutDirectory.status).toBe(200);
      expect(await withoutDirectory.json()).toMatchObject({ ready: true, checks: { directory: { ok: false, decidesReadiness: false } } });
    } finally {
      directoryUp = true;
    }
    ready = false;
    try {
      const down = await fetch(httpUrl("/readyz"));
      expect(down.status).toBe(503);
      expect(await down.json()).toMatchObject({ ready: false, checks: { nats: { ok: false } } });
    } finally {
      ready = true;
    }
  });

  it("answers /livez with 200", async () => {
    const response = await fetch(httpUrl("/livez"));
    expect(response.status).toBe(200);
    expect(await response.json()).toEqual({ live: true });
  });

  it("serves /metrics in the Prometheus text format, with a too-big frame's close counted by its code", async () => {
    const socket = await authenticatedSocket("metrics-user");
    socket.send("x".repeat(frameBytesMax + 1));
    await socket.closed();
    const response = await fetch(httpUrl("/metrics"));
    expect(response.status).toBe(200);
    expect(response.headers.get("content-type")).toContain("text/plain");
    const scraped = parsePrometheusText(await response.text());
    expect(scraped.types.get("cellwire_edge_closes_total")).toBe("counter");
    expect(scraped.sum("cellwire_edge_closes_total", { code: String(standardCloseCodes.messageTooBig) })).toBeGreaterThanOrEqual(1);
    expect(scraped.sum("cellwire_edge_frames_received_total", { type: "hello" })).toBeGreaterThanOrEqual(1);
    expect(scraped.find("cellwire_process_cpu_seconds_total")).not.toEqual([]);
  });

  it("signs a dev token for a valid user id that the dev verifier accepts", async () => {
    const response = await fetch(httpUrl("/dev/token?userId=alice&deviceId=phone"));
    expect(response.status).toBe(200);
    expect(response.headers.get("cache-control")).toBe("no-store");
    const body = (await response.json()) as { token?: unknown };
    expect(typeof body.token).toBe("string");
    const verifier = await createTokenVerifier({ mode: "dev", devKeyDirectory });
    expect(await verifier.verify(String(body.token))).toMatchObject({ ok: true, identity: { userId: "alice", deviceId: "phone" } });
  });

  it.each(["/dev/token?userId=victim.%3E", "/dev/token", "/dev/token?userId=alice&deviceId=a%20b"])("refuses %s with 400", async (path) => {
    const response = await fetch(httpUrl(path));
    expect(response.status).toBe(400);
    expect(await response.json()).toMatchObject({ error: expect.any(String) });
  });

  it("serves the web page at / and its assets with their content types", async () => {
    const page = await fetch(httpUrl("/"));
    expect(page.status).toBe(200);
    expect(page.headers.get("content-type")).toBe("text/html; charset=utf-8");
    expect(await page.text()).toBe(indexHtml);
    const script = await fetch(httpUrl("/app.js"));
    expect(script.status).toBe(200);
    expect(script.headers.get("content-type")).toBe("text/javascript; charset=utf-8");
    expect(await script.text()).toBe(appJs);
  });

  it("serves nothing but known web assets of the directory", async () => {
    for (const path of ["/notes.txt", "/missing.html", "/../package.json", "/dev-keys/private.jwk.json"]) {
      expect((await fetch(httpUrl(path))).status, path).toBe(404);
    }
  });
});

describe("WebSocket /ws", () => {
  it("welcomes a session through the core and answers its requests", async () => {
    const socket = await authenticatedSocket("alice");
    expect(socket.frames[0]).toMatchObject({ type: "welcome", userId: "alice", deviceId: "default", cellId: "a" });
    socket.sendJson({ type: "ping", requestId: "p1" });
    expect(await socket.frame((frame) => frame["requestId"] === "p1")).toEqual({ type: "pong", requestId: "p1" });
    socket.close();
  });

  it("closes a socket that sends a frame over frameBytesMax with 1009, and forgets its session", async () => {
    const socket = await authenticatedSocket("bob");
    await vi.waitFor(() => expect(edge.deliveries.sessionCount("bob")).toBe(1));
    socket.send("x".repeat(frameBytesMax + 1));
    expect(await socket.closed()).toBe(standardCloseCodes.messageTooBig);
    await vi.waitFor(() => expect(edge.deliveries.sessionCount("bob")).toBe(0), { timeout: waitDeadlineMs });
  });

  it("still cuts a frame far past the limit (uWS's own cap, twice frameBytesMax) without a close frame", async () => {
    const socket = await authenticatedSocket("bob");
    socket.send("x".repeat(2 * frameBytesMax + 1));
    expect(await socket.closed()).toBe(standardCloseCodes.abnormal);
    await vi.waitFor(() => expect(edge.deliveries.sessionCount("bob")).toBe(0), { timeout: waitDeadlineMs });
  });

  it("accepts a frame of exactly frameBytesMax", async () => {
    const socket = await authenticatedSocket("bob");
    // Padded with spaces, which JSON allows around a value: the frame is decoded, not refused for its size.
    const ping = JSON.stringify({ type: "ping", requestId: "big" });
    socket.send(ping + " ".repeat(frameBytesMax - Buffer.byteLength(ping)));
    expect(await socket.frame((frame) => frame["requestId"] === "big")).toEqual({ type: "pong", requestId: "big" });
    socket.close();
  });

  it("answers a binary frame after welcome with malformed_frame and keeps the socket usable", async () => {
    const socket = await authenticatedSocket("carol");
    socket.send(Buffer.from([1, 2, 3]));
    expect(await socket.frame((frame) => frame["type"] === "error")).toMatchObject({ code: "malformed_frame", retryable: false });
    socket.sendJson({ type: "ping", requestId: "after-binary" });
    expect(await socket.frame((frame) => frame["requestId"] === "after-binary")).toEqual({ type: "pong", requestId: "after-binary" });
    expect(socket.closeCode).toBeUndefined();
    expect(socket.binaryFrames).toEqual([]);
    socket.close();
  });

  it("closes a socket whose first frame is binary with 4200", async () => {
    const socket = await TestSocket.open(`ws://127.0.0.1:${server.port}/ws`);
    socket.send(Buffer.from([1]));
    expect(await socket.closed()).toBe(closeCodes.protocol_violation.code);
  });

  it("writes a listed conversation's backlog as message frames, then synced, over the socket", async () => {
    const conversationId = "g-SSSSSSSSSSSSSSSSSSSSSS";
    edge.logs.create(conversationId, { erin: 0 }, { head: 3 });
    const socket = await TestSocket.open(`ws://127.0.0.1:${server.port}/ws`);
    socket.sendJson({
      type: "hello",
      protocolVersion,
      token: "valid:erin",
      resumeAfterSeq: 0,
      conversations: [{ conversationId, afterSeq: 1 }],
    });
    await socket.frame((frame) => frame["type"] === "synced");
    expect(socket.frames.map((frame) => (frame["type"] === "message" ? (frame["message"] as { seq: number }).seq : frame["type"]))).toEqual(
      ["welcome", 2, 3, "synced"],
    );
    socket.close();
  });

  it("closes a hello of protocol version 1 with 4201", async () => {
    const socket = await TestSocket.open(`ws://127.0.0.1:${server.port}/ws`);
    socket.sendJson({ type: "hello", protocolVersion: 1, token: "valid:erin" });
    expect(await socket.closed()).toBe(closeCodes.unsupported_protocol_version.code);
  });

  it("forgets the session of a client that goes away", async () => {
    const socket = await authenticatedSocket("dave");
    await vi.waitFor(() => expect(edge.deliveries.sessionCount("dave")).toBe(1));
    socket.close();
    await vi.waitFor(() => expect(edge.deliveries.sessionCount("dave")).toBe(0), { timeout: waitDeadlineMs });
  });
});

/**
 * Opens a WebSocket with these headers and tells how the upgrade went: 101 (the socket is closed again at
 * once) or the HTTP status it was refused with.
 */
function upgradeStatus(port: number, headers: Record<string, string> = {}): Promise<number> {
  const socket = new WebSocket(`ws://127.0.0.1:${port}/ws`, { headers });
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no answer to the upgrade within ${waitDeadlineMs} ms`)), waitDeadlineMs);
    socket.once("open", () => {
      clearTimeout(timer);
      socket.close();
      resolve(101);
    });
    socket.once("unexpected-response", (_request, response) => {
      clearTimeout(timer);
      response.resume();
      resolve(response.statusCode ?? 0);
      socket.terminate();
    });
    socket.once("error", (error) => {
      clearTimeout(timer);
      reject(error);
    });
  });
}

describe("admission at the upgrade", () => {
  /** A server of its own with these admission settings; stopped after the test. */
  async function admittingServer(
    options: Partial<AdmissionOptions>,
    host = "127.0.0.1",
  ): Promise<{ port: number; edge: FakeEdge; admission: Admission; metrics: EdgeMetrics; health(): Promise<Record<string, unknown>> }> {
    const admittingEdge = fakeEdge();
    const doorMetrics = new EdgeMetrics("cellwire-edge-door-test");
    const admission = new Admission(
      {
        allowedOrigins: [],
        loopbackOriginsAllowed: false,
        connectionsPerAddressMax: 100,
        unauthenticatedMax: 1000,
        trustedProxies: [],
        ...options,
      },
      () => admittingEdge.core.unauthenticatedSessionCount,
    );
    const running = await startServer(
      loadNativeUws(),
      admittingEdge.core,
      {
        host,
        port: 0,
        idleTimeoutMs: 120_000,
        sendBufferBytesMax: 1024 * 1024,
        readiness: () => readinessReport([]),
        metrics: doorMetrics,
        admission,
      },
      { signToken: undefined, webDirectory: undefined },
    );
    stops.push(() => {
      admittingEdge.core.closeAll();
      running.stopListening();
    });
    return {
      port: running.port,
      edge: admittingEdge,
      admission,
      metrics: doorMetrics,
      health: async () => (await (await fetch(`http://127.0.0.1:${running.port}/healthz`)).json()) as Record<string, unknown>,
    };
  }

  const stops: (() => void)[] = [];
  afterAll(() => {
    for (const stop of stops) stop();
  });

  it("refuses a browser Origin not in the allowlist with 403, admits a listed one and a client without Origin, and counts", async () => {
    const door = await admittingServer({ allowedOrigins: ["https://app.example.com"] });
    expect(await upgradeStatus(door.port, { origin: "https://evil.example" })).toBe(403);
    expect(await upgradeStatus(door.port, { origin: "http://127.0.0.1:8080" })).toBe(403);
    expect(await upgradeStatus(door.port, { origin: "https://app.example.com" })).toBe(101);
    expect(await upgradeStatus(door.port)).toBe(101);
    expect(await door.health()).toMatchObject({ status: "ok", refusals: { origin_not_allowed: 2 } });
    const scraped = parsePrometheusText(await door.metrics.scrape());
    expect(scraped.sum("cellwire_edge_upgrades_refused_total", { reason: "origin_not_allowed" })).toBe(2);
  });

  it("refuses a socket past the unauthenticated budget with 503, and admits again once one authenticates", async () => {
    const door = await admittingServer({ unauthenticatedMax: 2 });
    const url = `ws://127.0.0.1:${door.port}/ws`;
    const first = await TestSocket.open(url);
    const second = await TestSocket.open(url);
    await vi.waitFor(() => expect(door.edge.core.unauthenticatedSessionCount).toBe(2), { timeout: waitDeadlineMs });
    expect(await upgradeStatus(door.port)).toBe(503);
    // No session was made for the refused socket: it never held a slot or an auth timer.
    expect(door.edge.core.sessionCount).toBe(2);
    first.sendJson({ type: "hello", protocolVersion, token: "valid:alice" });
    await first.frame((frame) => frame["type"] === "welcome");
    const third = await TestSocket.open(url);
    expect(await upgradeStatus(door.port)).toBe(503);
    second.close();
    await vi.waitFor(() => expect(door.edge.core.unauthenticatedSessionCount).toBe(1), { timeout: waitDeadlineMs });
    expect(await upgradeStatus(door.port)).toBe(101);
    expect(await door.health()).toMatchObject({ unauthenticatedSessions: 1, refusals: { unauthenticated_full: 2 } });
    first.close();
    third.close();
  });

  it("refuses a client address past its sockets with 429, authenticated or not, and frees the place on close", async () => {
    const door = await admittingServer({ connectionsPerAddressMax: 2 });
    const url = `ws://127.0.0.1:${door.port}/ws`;
    const first = await TestSocket.open(url);
    first.sendJson({ type: "hello", protocolVersion, token: "valid:alice" });
    await first.frame((frame) => frame["type"] === "welcome");
    const second = await TestSocket.open(url);
    expect(await upgradeStatus(door.port)).toBe(429);
    // X-Forwarded-For from a peer that is not a trusted proxy changes nothing.
    expect(await upgradeStatus(door.port, { "x-forwarded-for": "198.51.100.1" })).toBe(429);
    first.close();
    await vi.waitFor(() => expect(door.admission.connectionsFrom("127.0.0.1")).toBe(1), { timeout: waitDeadlineMs });
    expect(await upgradeStatus(door.port)).toBe(101);
    expect(await door.health()).toMatchObject({ refusals: { too_many_connections_from_address: 2 } });
    second.close();
  });

  it("counts an IPv4 client of a dual-stack listener under its IPv4 address (uWS spells it as IPv6 in full)", async () => {
    const door = await admittingServer({ connectionsPerAddressMax: 1 }, "::");
    const first = await TestSocket.open(`ws://127.0.0.1:${door.port}/ws`);
    await vi.waitFor(() => expect(door.admission.connectionsFrom("127.0.0.1")).toBe(1), { timeout: waitDeadlineMs });
    expect(await upgradeStatus(door.port)).toBe(429);
    first.close();
  });

  it("counts the client a trusted proxy names in X-Forwarded-For, not the proxy", async () => {
    const door = await admittingServer({ connectionsPerAddressMax: 1, trustedProxies: ["127.0.0.0/8"] });
    const url = `ws://127.0.0.1:${door.port}/ws`;
    const first = await TestSocket.open(url, { "x-forwarded-for": "198.51.100.1" });
    await vi.waitFor(() => expect(door.admission.connectionsFrom("198.51.100.1")).toBe(1), { timeout: waitDeadlineMs });
    expect(await upgradeStatus(door.port, { "x-forwarded-for": "198.51.100.1" })).toBe(429);
    expect(await upgradeStatus(door.port, { "x-forwarded-for": "203.0.113.9, 198.51.100.2" })).toBe(101);
    expect(door.admission.connectionsFrom("127.0.0.1")).toBe(0);
    first.close();
  });
});
