import { once } from "node:events";
import type { AddressInfo } from "node:net";
import { afterEach, describe, expect, it, vi } from "vitest";
import { WebSocketServer } from "ws";
import { protocolVersion } from "@cellwire/protocol";
import { runListen } from "./client-commands.ts";

/** An edge that welcomes every hello and then says nothing: the session never reports `synced`. */
async function startSilentEdge(): Promise<{ url: string; stop: () => Promise<void> }> {
  const server = new WebSocketServer({ host: "127.0.0.1", port: 0 });
  await once(server, "listening");
  server.on("connection", (socket) => {
    socket.once("message", () => {
      const welcome = {
        type: "welcome",
        protocolVersion,
        sessionId: "s-1",
        userId: "alice",
        deviceId: "cli",
        cellId: "a",
        heartbeatIntervalMs: 60_000,
      };
      socket.send(JSON.stringify(welcome));
    });
  });
  const { port } = server.address() as AddressInfo;
  return {
    url: `ws://127.0.0.1:${port}/ws`,
    stop: async () => {
      for (const client of server.clients) client.terminate();
      await new Promise<void>((resolve, reject) => server.close((error) => (error === undefined ? resolve() : reject(error))));
    },
  };
}

/** Lets Node report a rejection nobody handled (it does so once the microtasks of a turn have run). */
async function nextTurns(turns: number): Promise<void> {
  for (let turn = 0; turn < turns; turn++) await new Promise<void>((resolve) => setImmediate(resolve));
}

describe("cellwire listen", () => {
  const stops: (() => Promise<void>)[] = [];
  afterEach(async () => {
    vi.restoreAllMocks();
    for (const stop of stops.splice(0)) await stop();
  });

  it("ends on its timeout before the session synced without an unhandled rejection", async () => {
    const edge = await startSilentEdge();
    stops.push(edge.stop);
    const unhandled: unknown[] = [];
    const onUnhandled = (reason: unknown): void => {
      unhandled.push(reason);
    };
    process.on("unhandledRejection", onUnhandled);
    stops.push(async () => {
      process.off("unhandledRejection", onUnhandled);
    });
    vi.spyOn(process.stderr, "write").mockImplementation(() => true);

    const status = await runListen({
      edgeUrl: edge.url,
      deviceId: "cli",
      token: "token",
      userId: "alice",
      count: undefined,
      timeoutMs: 50,
      sinceSeq: undefined,
    });
    await nextTurns(5);

    expect(status).toBe(1);
    expect(unhandled).toEqual([]);
  });
});
