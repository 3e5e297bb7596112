// The connections benchmark's lean client, against `ws`'s server as the peer (a real RFC 6455 endpoint on
// port 0), and its frame codec and handshake check on their own.
import { createServer, type Server } from "node:net";
import type { AddressInfo } from "node:net";
import { afterEach, describe, expect, it } from "vitest";
import { WebSocketServer, type WebSocket as ServerSocket } from "ws";
import {
  acceptFor,
  encodeClientFrame,
  FrameReader,
  handshakeProblem,
  LeanWebSocket,
  opcodes,
  randomBytesFromPool,
} from "./lean-websocket.ts";

type Seen = { texts: string[]; errors: string[]; closes: { code: number | undefined; reason: string }[]; opened: boolean };

function watch(url: string): { socket: LeanWebSocket; seen: Seen } {
  const seen: Seen = { texts: [], errors: [], closes: [], opened: false };
  const socket = new LeanWebSocket(url, {
    onOpen: () => (seen.opened = true),
    onText: (text) => seen.texts.push(text),
    onError: (error) => seen.errors.push(error.message),
    onClose: (code, reason) => seen.closes.push({ code, reason }),
  });
  return { socket, seen };
}

async function until(condition: () => boolean): Promise<void> {
  const deadline = Date.now() + 5_000;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error("condition not met within 5 s");
    await new Promise((resolve) => setImmediate(resolve));
  }
}

const servers: { close: () => void }[] = [];
afterEach(() => {
  for (const server of servers.splice(0)) server.close();
});

async function wsServer(onConnection: (socket: ServerSocket, path: string) => void): Promise<string> {
  const server = new WebSocketServer({ host: "127.0.0.1", port: 0, perMessageDeflate: false });
  servers.push(server);
  server.on("connection", (socket, request) => onConnection(socket, request.url ?? ""));
  await new Promise<void>((resolve) => server.once("listening", resolve));
  return `ws://127.0.0.1:${(server.address() as AddressInfo).port}/edge?x=1`;
}

async function rawServer(answer: (request: string) => Buffer | string): Promise<string> {
  const server: Server = createServer((socket) => {
    socket.once("data", (data) => socket.write(answer(data.toString("latin1"))));
  });
  servers.push(server);
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return `ws://127.0.0.1:${(server.address() as AddressInfo).port}/`;
}

function keyOf(request: string): string {
  return /Sec-WebSocket-Key: (\S+)/.exec(request)?.[1] ?? "";
}

describe("LeanWebSocket against a ws server", () => {
  it("opens, sends text the server reads, and reads text, large and small, the server sends", async () => {
    const received: string[] = [];
    let path = "";
    const large = "y".repeat(70_000);
    const url = await wsServer((socket, requestPath) => {
      path = requestPath;
      socket.on("message", (data: Buffer) => {
        received.push(data.toString("utf8"));
        socket.send("welcome");
        socket.send("z".repeat(300));
        socket.send(large);
      });
    });
    const { socket, seen } = watch(url);
    await until(() => seen.opened);
    socket.send("hello é");
    await until(() => seen.texts.length === 3);
    expect(received).toEqual(["hello é"]);
    expect(path).toBe("/edge?x=1");
    expect(seen.texts).toEqual(["welcome", "z".repeat(300), large]);
    expect(seen.errors).toEqual([]);
    socket.terminate();
  });

  it("joins a message the server sent in fragments", async () => {
    const url = await wsServer((socket) => {
      socket.send("ab", { fin: false });
      socket.send("cd", { fin: true });
    });
    const { socket, seen } = watch(url);
    await until(() => seen.texts.length === 1);
    expect(seen.texts).toEqual(["abcd"]);
    socket.terminate();
  });

  it("answers a ping with a pong of the same payload", async () => {
    let pong = "";
    const url = await wsServer((socket) => {
      socket.on("pong", (data: Buffer) => (pong = data.toString("utf8")));
      socket.ping("are you there");
    });
    const { socket } = watch(url);
    await until(() => pong !== "");
    expect(pong).toBe("are you there");
    socket.terminate();
  });

  it("reports the server's close code and reason, and echoes the close", async () => {
    let echoed: number | undefined;
    const url = await wsServer((socket) => {
      socket.on("close", (code) => (echoed = code));
      socket.close(4001, "token_expired");
    });
    const { socket, seen } = watch(url);
    await socket.closed;
    expect(seen.closes).toEqual([{ code: 4001, reason: "token_expired" }]);
    await until(() => echoed !== undefined);
    expect(echoed).toBe(4001);
  });

  it("closes on its own initiative with the code the server then sees", async () => {
    let serverSaw: number | undefined;
    const url = await wsServer((socket) => socket.on("close", (code) => (serverSaw = code)));
    const { socket, seen } = watch(url);
    await until(() => seen.opened);
    socket.close(1000, "bench done");
    await socket.closed;
    await until(() => serverSaw !== undefined);
    expect(serverSaw).toBe(1000);
    expect(socket.isClosed).toBe(true);
  });
});

describe("LeanWebSocket against a broken server", () => {
  it("refuses a 101 whose Sec-WebSocket-Accept does not answer its key", async () => {
    const url = await rawServer(
      () => "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: bogus\r\n\r\n",
    );
    const { socket, seen } = watch(url);
    await socket.closed;
    expect(seen.opened).toBe(false);
    expect(seen.errors[0]).toContain("does not answer the key");
  });

  it("refuses an answer that is not 101", async () => {
    const url = await rawServer(() => "HTTP/1.1 403 Forbidden\r\ncontent-length: 0\r\n\r\n");
    const { socket, seen } = watch(url);
    await socket.closed;
    expect(seen.errors[0]).toContain("403 Forbidden");
  });

  it("reads a frame that came in the same packet as the handshake, and refuses a masked one after it", async () => {
    const url = await rawServer((request) => {
      const head = `HTTP/1.1 101 Switching Protocols\r\nSec-WebSocket-Accept: ${acceptFor(keyOf(request))}\r\n\r\n`;
      const text = Buffer.from([0x81, 0x02, 0x68, 0x69]);
      const masked = encodeClientFrame(opcodes.text, Buffer.from("no"), Buffer.from([1, 2, 3, 4]));
      return Buffer.concat([Buffer.from(head, "latin1"), text, masked]);
    });
    const { socket, seen } = watch(url);
    await socket.closed;
    expect(seen.texts).toEqual(["hi"]);
    expect(seen.errors).toEqual(["a masked frame from the server"]);
  });
  it("hands on no frame that follows a frame it refuses", async () => {
    const url = await rawServer((request) => {
      const head = `HTTP/1.1 101 Switching Protocols\r\nSec-WebSocket-Accept: ${acceptFor(keyOf(request))}\r\n\r\n`;
      const binary = Buffer.from([0x82, 0x01, 0x00]);
      const text = Buffer.from([0x81, 0x02, 0x68, 0x69]);
      return Buffer.concat([Buffer.from(head, "latin1"), binary, text]);
    });
    const { socket, seen } = watch(url);
    await socket.closed;
    expect(seen.errors).toEqual(["a frame of opcode 2 (this client takes text only)"]);
    expect(seen.texts).toEqual([]);
  });
});

describe("frame codec", () => {
  it("masks a client frame so that unmasking gives the payload back, at each length encoding", () => {
    for (const length of [0, 125, 126, 65_535, 65_536]) {
      const payload = Buffer.alloc(length, 0x61);
      const mask = Buffer.from([0x12, 0x34, 0x56, 0x78]);
      const frame = encodeClientFrame(opcodes.text, payload, mask);
      const headerBytes = length < 126 ? 2 : length <= 0xffff ? 4 : 10;
      expect(frame[0]).toBe(0x81);
      expect((frame[1] ?? 0) & 0x80).toBe(0x80);
      const body = frame.subarray(headerBytes + 4);
      const unmasked = Buffer.from(body.map((byte, index) => byte ^ (mask[index & 3] ?? 0)));
      expect(unmasked.equals(payload)).toBe(true);
    }
  });

  it("cuts frames split at any byte and refuses RSV bits, long control frames and oversized frames", () => {
    const frames = Buffer.concat([Buffer.from([0x81, 0x03]), Buffer.from("abc"), Buffer.from([0x89, 0x00])]);
    const reader = new FrameReader();
    const seen: string[] = [];
    for (const byte of frames) {
      const out = reader.push(Buffer.from([byte]));
      expect(out.error).toBeUndefined();
      for (const frame of out.frames) seen.push(`${frame.opcode}:${frame.payload.toString()}`);
    }
    expect(seen).toEqual(["1:abc", "9:"]);
    expect(new FrameReader().push(Buffer.from([0xc1, 0x00])).error).toBe("a frame with RSV bits set (no extension was agreed)");
    expect(new FrameReader().push(Buffer.from([0x89, 0x7e, 0x00, 0x7e])).error).toBe("a fragmented or long control frame");
    const huge = Buffer.from([0x81, 0x7f, 0, 0, 0, 1, 0, 0, 0, 0]);
    expect(new FrameReader().push(huge).error).toContain("at most");
  });

  it("accepts only a 101 whose accept header answers the key, in any header case", () => {
    const key = "dGhlIHNhbXBsZSBub25jZQ==";
    // RFC 6455 section 1.3's worked example.
    expect(acceptFor(key)).toBe("s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    expect(handshakeProblem(`HTTP/1.1 101 Switching Protocols\r\nsec-websocket-ACCEPT:  ${acceptFor(key)}`, key)).toBeUndefined();
    expect(handshakeProblem("HTTP/1.1 101 Switching Protocols\r\nSec-WebSocket-Accept: x", key)).toContain("does not answer");
    expect(handshakeProblem("HTTP/1.1 200 OK", key)).toContain("200 OK");
  });

  it("draws fresh, distinct random bytes across the pool's refills, each draw its own Buffer", () => {
    // 8 KiB a pool: 5,000 keys of 16 bytes refill it nine times, and draws never straddle a refill.
    const draws = Array.from({ length: 5_000 }, () => randomBytesFromPool(16));
    expect(draws.every((draw) => draw.length === 16)).toBe(true);
    expect(new Set(draws.map((draw) => draw.toString("hex"))).size).toBe(draws.length);
    const first = Buffer.from(draws[0] ?? Buffer.alloc(0));
    randomBytesFromPool(8 * 1024);
    expect(draws[0]?.equals(first)).toBe(true);
  });
});
