// The client with the `ws` package's WebSocket (what Node callers pass) against a small ws server on a
// loopback port: checks the real socket's event semantics (text data, close codes, error-then-close) that
// the unit tests' fake imitates.
import { once } from "node:events";
import type { AddressInfo } from "node:net";
import { closeCodes, decodeClientFrame, protocolVersion, type ServerFrame } from "@cellwire/protocol";
import { WebSocket, WebSocketServer } from "ws";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { CellwireClient, type StateChange, type TokenRequest } from "./cellwire-client.ts";
import { directConversationId } from "./testing/fake-edge.ts";

const deadlineMs = 5000;
let server: WebSocketServer;
let url: string;
const serverSockets: WebSocket[] = [];
const hellos: string[] = [];

beforeAll(async () => {
  server = new WebSocketServer({ host: "127.0.0.1", port: 0 });
  await once(server, "listening");
  url = `ws://127.0.0.1:${(server.address() as AddressInfo).port}/ws`;
  server.on("connection", (socket) => {
    serverSockets.push(socket);
    let seq = 0;
    socket.on("message", (data) => {
      const decoded = decodeClientFrame(String(data));
      if (!decoded.ok) return socket.close(closeCodes.protocol_violation.code, "bad frame");
      const frame = decoded.frame;
      const reply = (value: ServerFrame) => socket.send(JSON.stringify(value));
      if (frame.type === "hello") {
        hellos.push(frame.token);
        if (frame.token === "expired") return socket.close(closeCodes.token_expired.code, "expired");
        return reply({ type: "welcome", protocolVersion, sessionId: `s${serverSockets.length}`, userId: "alice", deviceId: frame.deviceId ?? "d", cellId: "a", heartbeatIntervalMs: 60_000 });
      }
      if (frame.type === "send") {
        seq += 1;
        return reply({ type: "ack", requestId: frame.requestId, conversationId: frame.conversationId, messageId: `m${seq}`, seq, sentAtMs: Date.now() });
      }
      if (frame.type === "ping") return reply({ type: "pong", requestId: frame.requestId });
    });
  });
});

afterAll(async () => {
  for (const socket of server.clients) socket.terminate();
  await new Promise<void>((resolve, reject) => server.close((error) => (error === undefined ? resolve() : reject(error))));
});

function waitForState(client: CellwireClient, wanted: (change: StateChange) => boolean): Promise<StateChange> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      unsubscribe();
      reject(new Error(`no matching state change within ${deadlineMs} ms (now ${client.state})`));
    }, deadlineMs);
    const unsubscribe = client.on("state", (change) => {
      if (!wanted(change)) return;
      clearTimeout(timer);
      unsubscribe();
      resolve(change);
    });
  });
}

describe("CellwireClient with ws (Node)", () => {
  it("connects, sends, refreshes its token after 4101, reconnects after an abrupt drop, and stops on 4200", async () => {
    const tokens = ["expired", "good-1", "good-2"];
    const requests: TokenRequest[] = [];
    const client = new CellwireClient({
      url,
      deviceId: "node",
      WebSocket,
      tokenProvider: async (request) => {
        requests.push(request);
        return tokens.shift() ?? "good-n";
      },
      backoff: { initialDelayMs: 10, delayMsMax: 50 },
    });
    try {
      const welcome = await client.connect();
      expect(welcome).toMatchObject({ userId: "alice", deviceId: "node" });
      expect(hellos.slice(0, 2)).toEqual(["expired", "good-1"]);
      expect(requests.map((request) => request.reason)).toEqual(["connect", "refresh"]);
      await expect(client.send(directConversationId, "over a real socket")).resolves.toMatchObject({ seq: 1 });

      const reopened = waitForState(client, (change) => change.state === "open");
      serverSockets.at(-1)?.terminate();
      await reopened;
      expect(requests.at(-1)?.reason).toBe("reconnect");
      await expect(client.send(directConversationId, "after the drop")).resolves.toMatchObject({ seq: 1 });

      const stopped = waitForState(client, (change) => change.state === "closed");
      serverSockets.at(-1)?.close(closeCodes.protocol_violation.code, "go away");
      await expect(stopped).resolves.toMatchObject({ closedReason: "stopped_by_server", closeCode: closeCodes.protocol_violation.code });
    } finally {
      client.close();
    }
  });
});
