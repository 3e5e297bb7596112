// A WebSocket proxy between a client and a real edge that can rewrite what the edge sends, for the
// protocol evolution test: it makes today's edge look like a newer one (extra fields, frame types, error
// and close codes an old SDK has never seen), without waiting for the edge that sends them.
import { once } from "node:events";
import type { AddressInfo } from "node:net";
import { WebSocket, WebSocketServer, type RawData } from "ws";

/**
 * Turns one text frame of the edge into the frames the client receives instead (none drops it). `close`
 * ends the client's socket with a code after them, as a newer edge closing with a code of its own would.
 */
export type EdgeFrameRewrite = (text: string) => {
  readonly frames: readonly string[];
  readonly close?: { readonly code: number; readonly reason: string };
};

/** Codes a peer may not send in a close frame (RFC 6455 §7.4.1): the proxy ends the other side without one. */
function sendableCloseCode(code: number): boolean {
  return (
    code === 1000 || (code >= 1001 && code <= 1014 && code !== 1004 && code !== 1005 && code !== 1006) || (code >= 3000 && code <= 4999)
  );
}

export class FrameProxy {
  private readonly sockets = new Set<WebSocket>();

  private constructor(
    private readonly server: WebSocketServer,
    readonly url: string,
  ) {}

  /** Listens on a free loopback port; every connection is forwarded to `edgeUrl`, the edge's frames through `rewrite`. */
  static async start(edgeUrl: string, rewrite: EdgeFrameRewrite): Promise<FrameProxy> {
    const server = new WebSocketServer({ host: "127.0.0.1", port: 0 });
    await once(server, "listening");
    const { port } = server.address() as AddressInfo;
    const proxy = new FrameProxy(server, `ws://127.0.0.1:${port}/ws`);
    server.on("connection", (client) => proxy.forward(client, edgeUrl, rewrite));
    return proxy;
  }

  async stop(): Promise<void> {
    for (const socket of this.sockets) socket.terminate();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  private forward(client: WebSocket, edgeUrl: string, rewrite: EdgeFrameRewrite): void {
    const edge = new WebSocket(edgeUrl);
    this.sockets.add(client);
    this.sockets.add(edge);
    // The client's frames wait for the edge's socket to open, in order.
    const waiting: RawData[] = [];
    client.on("message", (data, isBinary) => {
      if (edge.readyState === WebSocket.OPEN) edge.send(data, { binary: isBinary });
      else waiting.push(data);
    });
    edge.on("open", () => {
      for (const data of waiting.splice(0)) edge.send(data, { binary: false });
    });
    edge.on("message", (data) => {
      const outcome = rewrite(rawText(data));
      for (const frame of outcome.frames) if (client.readyState === WebSocket.OPEN) client.send(frame);
      if (outcome.close !== undefined && client.readyState === WebSocket.OPEN) {
        client.close(outcome.close.code, outcome.close.reason);
        edge.close(1000, "the client was closed by the proxy");
      }
    });
    edge.on("close", (code, reason) => {
      this.sockets.delete(edge);
      if (client.readyState !== WebSocket.OPEN) return;
      if (sendableCloseCode(code)) client.close(code, reason.toString());
      else client.terminate();
    });
    client.on("close", () => {
      this.sockets.delete(client);
      if (edge.readyState === WebSocket.OPEN || edge.readyState === WebSocket.CONNECTING) edge.terminate();
    });
    edge.on("error", () => client.terminate());
    client.on("error", () => edge.terminate());
  }
}

function rawText(data: RawData): string {
  if (Array.isArray(data)) return Buffer.concat(data).toString("utf8");
  if (data instanceof ArrayBuffer) return Buffer.from(data).toString("utf8");
  return data.toString("utf8");
}
