// PROXY protocol headers built by hand (https://www.haproxy.org/download/2.6/doc/proxy-protocol.txt), as a
// proxy in front of the edge writes them, and a raw TCP connection to send them on: a WebSocket client
// cannot put bytes before its upgrade request.
import { connect, isIP, type Socket } from "node:net";
import { Waiters } from "@cellwire/testkit";

/** The 12 bytes every version 2 header starts with. */
export const proxyV2Signature = Buffer.from("\r\n\r\n\0\r\nQUIT\n", "latin1");

export type ProxyV2Options = {
  /** The high nibble is the version (2), the low one the command: 0x21 PROXY, 0x20 LOCAL. */
  readonly versionCommand?: number;
  /** When given, replaces the length the addresses need (a header that lies about its size). */
  readonly length?: number;
};

/** A version 2 PROXY header over TCP (family 0x11 for IPv4, 0x21 for IPv6) naming `source` as the client. */
export function proxyV2Header(source: string, destination: string, options: ProxyV2Options = {}): Buffer {
  const family = isIP(source);
  if (family === 0 || family !== isIP(destination)) throw new Error(`${source} and ${destination} must be addresses of one family`);
  const addresses =
    family === 4 ? Buffer.concat([ipv4Bytes(source), ipv4Bytes(destination)]) : Buffer.concat([ipv6Bytes(source), ipv6Bytes(destination)]);
  const ports = Buffer.alloc(4);
  ports.writeUInt16BE(54321, 0);
  ports.writeUInt16BE(8080, 2);
  const body = Buffer.concat([addresses, ports]);
  const head = Buffer.alloc(4);
  head.writeUInt8(options.versionCommand ?? 0x21, 0);
  head.writeUInt8(family === 4 ? 0x11 : 0x21, 1);
  head.writeUInt16BE(options.length ?? body.length, 2);
  return Buffer.concat([proxyV2Signature, head, body]);
}

/** What haproxy's health checks send with `check-send-proxy`: LOCAL, family UNSPEC, no addresses. */
export function proxyV2LocalHeader(): Buffer {
  return Buffer.concat([proxyV2Signature, Buffer.from([0x20, 0x00, 0x00, 0x00])]);
}

/** A version 1 (text) header, which the edge's uWebSockets.js does not read. */
export function proxyV1Header(source: string, destination: string): Buffer {
  return Buffer.from(`PROXY TCP4 ${source} ${destination} 54321 8080\r\n`, "latin1");
}

export function upgradeRequest(extraHeaders: Record<string, string> = {}): Buffer {
  const extra = Object.entries(extraHeaders)
    .map(([name, value]) => `${name}: ${value}\r\n`)
    .join("");
  return Buffer.from(
    "GET /ws HTTP/1.1\r\nHost: edge\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
      `Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n${extra}\r\n`,
    "latin1",
  );
}

export function getRequest(path: string): Buffer {
  return Buffer.from(`GET ${path} HTTP/1.1\r\nHost: edge\r\n\r\n`, "latin1");
}

/** A TCP connection that records what it receives and its close, and waits for them with deadlines. */
export class RawConnection {
  received = "";
  isClosed = false;
  private readonly waiters = new Waiters();

  private constructor(private readonly socket: Socket) {
    socket.on("data", (data: Buffer) => {
      this.received += data.toString("latin1");
      this.waiters.notify();
    });
    socket.on("close", () => {
      this.isClosed = true;
      this.waiters.notify();
    });
    socket.on("error", () => undefined);
  }

  static open(port: number, host = "127.0.0.1"): Promise<RawConnection> {
    const socket = connect(port, host);
    return new Promise((resolve, reject) => {
      socket.once("connect", () => resolve(new RawConnection(socket)));
      socket.once("error", reject);
    });
  }

  write(bytes: Buffer): void {
    this.socket.write(bytes);
  }

  /** The status codes of the HTTP answers received so far, in order. */
  statuses(): number[] {
    return [...this.received.matchAll(/HTTP\/1\.1 (\d{3}) /g)].map((match) => Number(match[1]));
  }

  /** Waits until `count` HTTP answers came and returns the last one's status. */
  async status(count = 1): Promise<number> {
    await this.waiters.until(() => this.statuses().length >= count || this.isClosed, `HTTP answer ${count}`);
    const status = this.statuses()[count - 1];
    if (status === undefined) throw new Error(`closed after ${JSON.stringify(this.received)}, before HTTP answer ${count}`);
    return status;
  }

  async closed(deadlineMs: number): Promise<void> {
    await this.waiters.until(() => this.isClosed, "the close", deadlineMs);
  }

  destroy(): void {
    this.socket.destroy();
  }
}

function ipv4Bytes(address: string): Buffer {
  return Buffer.from(address.split(".").map(Number));
}

function ipv6Bytes(address: string): Buffer {
  const [head = "", tail = ""] = address.split("::");
  const headGroups = head === "" ? [] : head.split(":");
  const tailGroups = tail === "" ? [] : tail.split(":");
  const groups = address.includes("::")
    ? [...headGroups, ...Array<string>(8 - headGroups.length - tailGroups.length).fill("0"), ...tailGroups]
    : headGroups;
  const bytes = Buffer.alloc(16);
  groups.forEach((group, index) => bytes.writeUInt16BE(Number.parseInt(group, 16), index * 2));
  return bytes;
}
