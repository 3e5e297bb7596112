// The connections benchmark's own WebSocket client: RFC 6455 over a bare TCP socket, with only what a
// minimal session needs (the opening handshake with its accept check, masked text frames out, text, ping
// and close frames in). It exists because the load processes share the two cores with the edge they
// measure: the `ws` client spent about 365 µs of CPU per connect across them (an http.ClientRequest, its
// header machinery and a random mask per frame), more than the edge itself, so the instrument capped the
// figure it measured. The SDK clients of the kill measurement still use `ws`, as browsers and users would.
//
// Not a general client: no extensions, no subprotocols, no binary frames, no fragmentation out. Frames in
// are checked as a client must (no mask from the server, control frames short and whole), and any breach
// ends the socket with an error rather than guessing.
import { createHash, randomFillSync } from "node:crypto";
import { connect, type Socket } from "node:net";

const acceptGuid = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
/** Bytes of an opening handshake's response we read before calling it malformed. */
const handshakeBytesMax = 8 * 1024;
/** A message larger than this (the edge's frames are a few KB) ends the socket: bounded memory per socket. */
export const messageBytesMax = 1024 * 1024;

export const opcodes = { continuation: 0x0, text: 0x1, binary: 0x2, close: 0x8, ping: 0x9, pong: 0xa } as const;

export type Frame = { readonly fin: boolean; readonly opcode: number; readonly payload: Buffer };

/**
 * Bytes from the CSPRNG, drawn from a pool refilled 8 KiB at a time, as `ws` does for its masks: a
 * `randomBytes` call per key and per frame was 7-8% of a load process's CPU in a connects profile.
 */
const randomPool = Buffer.alloc(8 * 1024);
let randomPoolOffset = randomPool.length;

/** A fresh Buffer of `count` random bytes (count at most the pool's size). */
export function randomBytesFromPool(count: number): Buffer {
  if (randomPoolOffset + count > randomPool.length) {
    randomFillSync(randomPool);
    randomPoolOffset = 0;
  }
  const bytes = Buffer.from(randomPool.subarray(randomPoolOffset, randomPoolOffset + count));
  randomPoolOffset += count;
  return bytes;
}

/** A frame's masking key: fresh random bytes for each frame, as RFC 6455 5.3 asks of a client. */
function maskKey(): Buffer {
  return randomBytesFromPool(4);
}

/** The value a server must answer in Sec-WebSocket-Accept for this Sec-WebSocket-Key. */
export function acceptFor(key: string): string {
  return createHash("sha1")
    .update(key + acceptGuid)
    .digest("base64");
}

/** One client frame, FIN set, its payload masked with `maskKey` (4 bytes), as RFC 6455 5.3 requires. */
export function encodeClientFrame(opcode: number, payload: Buffer, maskKey: Buffer): Buffer {
  const length = payload.length;
  const headerBytes = length < 126 ? 2 : length <= 0xffff ? 4 : 10;
  const frame = Buffer.allocUnsafe(headerBytes + 4 + length);
  frame[0] = 0x80 | opcode;
  if (length < 126) frame[1] = 0x80 | length;
  else if (length <= 0xffff) {
    frame[1] = 0x80 | 126;
    frame.writeUInt16BE(length, 2);
  } else {
    frame[1] = 0x80 | 127;
    frame.writeBigUInt64BE(BigInt(length), 2);
  }
  maskKey.copy(frame, headerBytes, 0, 4);
  const start = headerBytes + 4;
  for (let index = 0; index < length; index++) frame[start + index] = (payload[index] ?? 0) ^ (maskKey[index & 3] ?? 0);
  return frame;
}

/**
 * Cuts server frames out of the bytes as they arrive. `push` returns the whole frames found so far and,
 * when the stream then breaks the protocol, why (after which the reader is of no further use).
 */
export class FrameReader {
  private buffered: Buffer = Buffer.alloc(0);

  push(chunk: Buffer): { readonly frames: Frame[]; readonly error?: string } {
    this.buffered = this.buffered.length === 0 ? chunk : Buffer.concat([this.buffered, chunk]);
    const frames: Frame[] = [];
    for (;;) {
      const buffer = this.buffered;
      if (buffer.length < 2) return { frames };
      const first = buffer[0] ?? 0;
      const second = buffer[1] ?? 0;
      if ((first & 0x70) !== 0) return { frames, error: "a frame with RSV bits set (no extension was agreed)" };
      if ((second & 0x80) !== 0) return { frames, error: "a masked frame from the server" };
      const opcode = first & 0x0f;
      let length = second & 0x7f;
      let offset = 2;
      if (length === 126) {
        if (buffer.length < 4) return { frames };
        length = buffer.readUInt16BE(2);
        offset = 4;
      } else if (length === 127) {
        if (buffer.length < 10) return { frames };
        const long = buffer.readBigUInt64BE(2);
        if (long > BigInt(messageBytesMax)) return { frames, error: `a frame of ${long} bytes (at most ${messageBytesMax})` };
        length = Number(long);
        offset = 10;
      }
      if (length > messageBytesMax) return { frames, error: `a frame of ${length} bytes (at most ${messageBytesMax})` };
      const fin = (first & 0x80) !== 0;
      if (opcode >= 0x8 && (!fin || length > 125)) return { frames, error: "a fragmented or long control frame" };
      if (buffer.length < offset + length) return { frames };
      frames.push({ fin, opcode, payload: buffer.subarray(offset, offset + length) });
      this.buffered = buffer.subarray(offset + length);
    }
  }
}

export type LeanWebSocketEvents = {
  readonly onOpen: () => void;
  readonly onText: (text: string) => void;
  /** Once, whatever ended the socket; `code` is the close frame's (1005 when it carried none), or undefined without one. */
  readonly onClose: (code: number | undefined, reason: string) => void;
  readonly onError: (error: Error) => void;
};

type State = "handshake" | "open" | "closing" | "closed";

/** One client connection to a ws:// URL (a loopback edge: no TLS). */
export class LeanWebSocket {
  private readonly socket: Socket;
  private readonly key: string;
  private state: State = "handshake";
  private handshakeBytes: Buffer = Buffer.alloc(0);
  private readonly reader = new FrameReader();
  private fragments: Buffer[] = [];
  private fragmentBytes = 0;
  private failed = false;
  private closeCode: number | undefined;
  private closeReason = "";
  private resolveClosed: () => void = () => undefined;
  /** Settles once the socket has closed, however it ended. */
  readonly closed = new Promise<void>((resolve) => {
    this.resolveClosed = resolve;
  });

  constructor(
    url: string,
    private readonly events: LeanWebSocketEvents,
  ) {
    const target = new URL(url);
    if (target.protocol !== "ws:") throw new Error(`LeanWebSocket speaks ws:// only, not ${target.protocol}`);
    this.key = randomBytesFromPool(16).toString("base64");
    const port = Number(target.port || "80");
    const host = target.hostname.startsWith("[") ? target.hostname.slice(1, -1) : target.hostname;
    const request =
      `GET ${target.pathname}${target.search} HTTP/1.1\r\nHost: ${target.host}\r\nUpgrade: websocket\r\n` +
      `Connection: Upgrade\r\nSec-WebSocket-Key: ${this.key}\r\nSec-WebSocket-Version: 13\r\n\r\n`;
    this.socket = connect({ host, port, noDelay: true }, () => this.socket.write(request, "latin1"));
    this.socket.on("data", (chunk: Buffer) => this.onData(chunk));
    this.socket.on("error", (error) => this.fail(error));
    this.socket.on("close", () => this.finish());
  }

  get isOpen(): boolean {
    return this.state === "open";
  }

  get isClosed(): boolean {
    return this.state === "closed";
  }

  send(text: string): void {
    if (this.state !== "open") throw new Error(`send on a ${this.state} socket`);
    this.socket.write(encodeClientFrame(opcodes.text, Buffer.from(text, "utf8"), maskKey()));
  }

  /** Starts the closing handshake; onClose follows when the server answers or the socket ends. */
  close(code: number, reason: string): void {
    if (this.state === "handshake") return this.terminate();
    if (this.state !== "open") return;
    this.state = "closing";
    const payload = Buffer.alloc(2 + Buffer.byteLength(reason));
    payload.writeUInt16BE(code, 0);
    payload.write(reason, 2, "utf8");
    this.socket.write(encodeClientFrame(opcodes.close, payload, maskKey()));
  }

  terminate(): void {
    this.socket.destroy();
  }

  private fail(error: Error): void {
    if (this.state === "closed" || this.failed) return;
    // The socket's close event comes later: no frame read after the breach is handed on meanwhile.
    this.failed = true;
    this.events.onError(error);
    this.socket.destroy();
  }

  private finish(): void {
    if (this.state === "closed") return;
    this.state = "closed";
    this.resolveClosed();
    this.events.onClose(this.closeCode, this.closeReason);
  }

  private onData(chunk: Buffer): void {
    if (this.state === "handshake") {
      this.handshakeBytes = this.handshakeBytes.length === 0 ? chunk : Buffer.concat([this.handshakeBytes, chunk]);
      const end = this.handshakeBytes.indexOf("\r\n\r\n");
      if (end < 0) {
        if (this.handshakeBytes.length > handshakeBytesMax) this.fail(new Error("no end to the handshake's response headers"));
        return;
      }
      const problem = handshakeProblem(this.handshakeBytes.subarray(0, end).toString("latin1"), this.key);
      if (problem !== undefined) return this.fail(new Error(problem));
      const rest = this.handshakeBytes.subarray(end + 4);
      this.handshakeBytes = Buffer.alloc(0);
      this.state = "open";
      this.events.onOpen();
      if (rest.length > 0) this.onFrames(rest);
      return;
    }
    this.onFrames(chunk);
  }

  private onFrames(chunk: Buffer): void {
    const { frames, error } = this.reader.push(chunk);
    for (const frame of frames) {
      if (this.state === "closed" || this.failed) return;
      this.onFrame(frame);
    }
    if (error !== undefined) this.fail(new Error(error));
  }

  private onFrame(frame: Frame): void {
    switch (frame.opcode) {
      case opcodes.ping:
        if (this.state === "open") this.socket.write(encodeClientFrame(opcodes.pong, frame.payload, maskKey()));
        return;
      case opcodes.pong:
        return;
      case opcodes.close:
        this.closeCode = frame.payload.length >= 2 ? frame.payload.readUInt16BE(0) : 1005;
        this.closeReason = frame.payload.subarray(2).toString("utf8");
        // Echo the close (RFC 6455 5.5.1) unless it answers ours, then let the server end the TCP connection.
        if (this.state === "open") this.socket.write(encodeClientFrame(opcodes.close, frame.payload.subarray(0, 2), maskKey()));
        this.state = "closing";
        this.socket.end();
        return;
      case opcodes.text:
      case opcodes.continuation: {
        const startsMessage = frame.opcode === opcodes.text;
        if (startsMessage === this.fragments.length > 0) return this.fail(new Error("a frame out of its message's order"));
        this.fragmentBytes += frame.payload.length;
        if (this.fragmentBytes > messageBytesMax) return this.fail(new Error(`a message over ${messageBytesMax} bytes`));
        if (!frame.fin) {
          this.fragments.push(frame.payload);
          return;
        }
        const whole = this.fragments.length === 0 ? frame.payload : Buffer.concat([...this.fragments, frame.payload]);
        this.fragments = [];
        this.fragmentBytes = 0;
        if (this.state === "open") this.events.onText(whole.toString("utf8"));
        return;
      }
      default:
        return this.fail(new Error(`a frame of opcode ${frame.opcode} (this client takes text only)`));
    }
  }
}

/** What is wrong with an opening handshake's response (its status line and headers), or undefined. */
export function handshakeProblem(head: string, key: string): string | undefined {
  const lines = head.split("\r\n");
  const status = lines[0] ?? "";
  if (!/^HTTP\/1\.1 101 /.test(status)) return `the edge answered the upgrade with ${JSON.stringify(status.slice(0, 100))}`;
  let accept: string | undefined;
  for (const line of lines.slice(1)) {
    const colon = line.indexOf(":");
    if (colon > 0 && line.slice(0, colon).trim().toLowerCase() === "sec-websocket-accept") accept = line.slice(colon + 1).trim();
  }
  if (accept !== acceptFor(key)) return `Sec-WebSocket-Accept ${JSON.stringify(accept)} does not answer the key`;
  return undefined;
}
