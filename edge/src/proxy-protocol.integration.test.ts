// The client address from a PROXY protocol v2 header, through the real uWebSockets.js server over raw TCP
// connections (a WebSocket client cannot write bytes before its upgrade): counted from a trusted proxy,
// ignored from anyone else, and what uWS does with headers it does not read (v1, malformed) or with a second
// header on a kept-alive connection.
import { afterAll, describe, expect, it, vi } from "vitest";
import { readinessReport } from "@cellwire/cluster";
import { Admission, type AdmissionOptions } from "./admission.ts";
import { startServer } from "./edge-server.ts";
import { EdgeMetrics } from "./edge-metrics.ts";
import { loadNativeUws } from "./uws.ts";
import { fakeEdge, waitDeadlineMs } from "../test/edge-fakes.ts";
import { getRequest, proxyV1Header, proxyV2Header, proxyV2LocalHeader, RawConnection, upgradeRequest } from "../test/proxy-header.ts";

/** uWS closes an HTTP connection that has not finished its request after 10 s (HTTP_IDLE_TIMEOUT_S). */
const uwsHttpIdleDeadlineMs = 20_000;

const stops: (() => void)[] = [];
const connections: RawConnection[] = [];
afterAll(() => {
  for (const connection of connections) connection.destroy();
  for (const stop of stops) stop();
});

/** A server of its own with these admission settings; stopped after the file. */
async function admittingServer(
  options: Partial<AdmissionOptions>,
): Promise<{ port: number; admission: Admission; health(): Promise<unknown> }> {
  const edge = fakeEdge();
  const admission = new Admission(
    {
      allowedOrigins: [],
      loopbackOriginsAllowed: false,
      connectionsPerAddressMax: 1,
      unauthenticatedMax: 1000,
      trustedProxies: [],
      ...options,
    },
    () => edge.core.unauthenticatedSessionCount,
  );
  const running = await startServer(
    loadNativeUws(),
    edge.core,
    {
      host: "127.0.0.1",
      port: 0,
      idleTimeoutMs: 120_000,
      sendBufferBytesMax: 1024 * 1024,
      readiness: () => readinessReport([]),
      metrics: new EdgeMetrics("cellwire-edge-proxy-test"),
      admission,
    },
    { signToken: undefined, webDirectory: undefined },
  );
  stops.push(() => {
    edge.core.closeAll();
    running.stopListening();
  });
  return {
    port: running.port,
    admission,
    health: async () => (await fetch(`http://127.0.0.1:${running.port}/healthz`)).json(),
  };
}

/** Opens a raw connection, writes `bytes` and returns it with the status of the first answer. */
async function send(port: number, bytes: Buffer): Promise<{ connection: RawConnection; status: number }> {
  const connection = await RawConnection.open(port);
  connections.push(connection);
  connection.write(bytes);
  return { connection, status: await connection.status() };
}

describe("a PROXY v2 header from a trusted proxy", () => {
  it("counts each socket under the source the header names, each source with its own quota, before X-Forwarded-For; from anyone else, the peer", async () => {
    const door = await admittingServer({ trustedProxies: ["127.0.0.0/8"] });
    const first = await send(door.port, Buffer.concat([proxyV2Header("198.51.100.1", "127.0.0.1"), upgradeRequest()]));
    expect(first.status).toBe(101);
    expect(door.admission.connectionsFrom("198.51.100.1")).toBe(1);
    expect(door.admission.connectionsFrom("127.0.0.1")).toBe(0);
    // The same source again is past its one socket, whatever X-Forwarded-For the client put behind the header.
    const again = Buffer.concat([proxyV2Header("198.51.100.1", "127.0.0.1"), upgradeRequest({ "X-Forwarded-For": "203.0.113.9" })]);
    expect((await send(door.port, again)).status).toBe(429);
    // Another source, and an IPv6 one (uWS spells it in full; it is counted compressed), have their own.
    expect((await send(door.port, Buffer.concat([proxyV2Header("198.51.100.2", "127.0.0.1"), upgradeRequest()]))).status).toBe(101);
    expect((await send(door.port, Buffer.concat([proxyV2Header("2001:db8::5", "2001:db8::1"), upgradeRequest()]))).status).toBe(101);
    expect(door.admission.connectionsFrom("2001:db8::5")).toBe(1);
    expect(await door.health()).toMatchObject({ refusals: { too_many_connections_from_address: 1 } });
    first.connection.destroy();
    await vi.waitFor(() => expect(door.admission.connectionsFrom("198.51.100.1")).toBe(0), { timeout: waitDeadlineMs });
    expect((await send(door.port, Buffer.concat([proxyV2Header("198.51.100.1", "127.0.0.1"), upgradeRequest()]))).status).toBe(101);

    // The same headers from a peer that is not a trusted proxy change nothing: uWS still reports the
    // socket's peer as the remote address, and that is what is counted.
    const untrusting = await admittingServer({ trustedProxies: ["10.0.0.0/8"] });
    expect((await send(untrusting.port, Buffer.concat([proxyV2Header("198.51.100.1", "127.0.0.1"), upgradeRequest()]))).status).toBe(101);
    expect(untrusting.admission.connectionsFrom("127.0.0.1")).toBe(1);
    expect(untrusting.admission.connectionsFrom("198.51.100.1")).toBe(0);
    // Another named source does not buy the peer another socket.
    expect((await send(untrusting.port, Buffer.concat([proxyV2Header("198.51.100.2", "127.0.0.1"), upgradeRequest()]))).status).toBe(429);
  });

  it("keeps the proxy's own address for a LOCAL header, which haproxy's health checks send, and answers /readyz behind one", async () => {
    const door = await admittingServer({ trustedProxies: ["127.0.0.0/8"] });
    expect((await send(door.port, Buffer.concat([proxyV2LocalHeader(), getRequest("/readyz")]))).status).toBe(200);
    expect((await send(door.port, Buffer.concat([proxyV2LocalHeader(), upgradeRequest()]))).status).toBe(101);
    expect(door.admission.connectionsFrom("127.0.0.1")).toBe(1);
    // A PROXY header on the next connection names its client, who is not the proxy: its own quota.
    expect((await send(door.port, Buffer.concat([proxyV2Header("198.51.100.1", "127.0.0.1"), upgradeRequest()]))).status).toBe(101);
    expect(door.admission.connectionsFrom("127.0.0.1")).toBe(1);
  });
});

describe("headers uWebSockets.js does not read", () => {
  it(
    "holds a connection that starts with a v1 header, a v2 header of another version or one longer than its addresses, unanswered, until uWS's HTTP idle timeout closes it",
    async () => {
      const door = await admittingServer({ trustedProxies: ["127.0.0.0/8"] });
      const starts = [
        proxyV1Header("198.51.100.1", "127.0.0.1"),
        proxyV2Header("198.51.100.1", "127.0.0.1", { versionCommand: 0x31 }),
        // 12 address bytes and 28 of TLVs: uWS takes at most the 36 bytes of two IPv6 addresses and ports.
        Buffer.concat([proxyV2Header("198.51.100.1", "127.0.0.1", { length: 40 }), Buffer.alloc(28)]),
      ];
      const opened = await Promise.all(starts.map(() => RawConnection.open(door.port)));
      connections.push(...opened);
      opened.forEach((connection, index) => connection.write(Buffer.concat([starts[index] ?? Buffer.alloc(0), upgradeRequest()])));
      await Promise.all(opened.map((connection) => connection.closed(uwsHttpIdleDeadlineMs)));
      expect(opened.map((connection) => connection.received)).toEqual(["", "", ""]);
      // The upgrade handler never ran: nothing was counted or refused.
      expect(door.admission.connectionsFrom("127.0.0.1")).toBe(0);
      expect(door.admission.connectionsFrom("198.51.100.1")).toBe(0);
      expect(await door.health()).toMatchObject({ refusals: { too_many_connections_from_address: 0, origin_not_allowed: 0 } });
    },
    uwsHttpIdleDeadlineMs + waitDeadlineMs,
  );
});

describe("a second PROXY v2 header on a kept-alive connection", () => {
  // uWS reads a header before every request, not only a connection's first: behind a proxy that passes the
  // client's bytes through (haproxy in TCP mode), a client can name any source after one plain request.
  // This is why compose's haproxy stays in HTTP mode, which forwards requests, not bytes (deploy/haproxy/haproxy.cfg).
  it("replaces the source the first one named (so the proxy in front must not pass raw bytes)", async () => {
    const door = await admittingServer({ trustedProxies: ["127.0.0.0/8"] });
    const connection = await RawConnection.open(door.port);
    connections.push(connection);
    connection.write(Buffer.concat([proxyV2Header("198.51.100.1", "127.0.0.1"), getRequest("/livez")]));
    expect(await connection.status(1)).toBe(200);
    connection.write(Buffer.concat([proxyV2Header("192.0.2.66", "127.0.0.1"), upgradeRequest()]));
    expect(await connection.status(2)).toBe(101);
    expect(door.admission.connectionsFrom("192.0.2.66")).toBe(1);
    expect(door.admission.connectionsFrom("198.51.100.1")).toBe(0);
  });
});
