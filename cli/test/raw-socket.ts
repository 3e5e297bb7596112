// A bare WebSocket for tests that must send what no well-behaved client would: it records every frame
// and the close, and waits for them with deadlines.
import { WebSocket } from "ws";

export type Received = { readonly text: string; readonly value: unknown };

export class RawSocket {
  readonly frames: Received[] = [];
  closeCode: number | undefined;
  private readonly waiters = new Set<() => void>();

  private constructor(private readonly socket: WebSocket) {
    socket.on("message", (data, isBinary) => {
      const text = isBinary ? "" : data.toString();
      let value: unknown;
      try {
        value = JSON.parse(text) as unknown;
      } catch {
        value = undefined;
      }
      this.frames.push({ text, value });
      this.notify();
    });
    socket.on("close", (code) => {
      this.closeCode = code;
      this.notify();
    });
  }

  static open(url: string, deadlineMs = 5000): Promise<RawSocket> {
    return new Promise((resolve, reject) => {
      const socket = new WebSocket(url);
      const timer = setTimeout(() => reject(new Error(`could not open ${url} within ${deadlineMs} ms`)), deadlineMs);
      const raw = new RawSocket(socket);
      socket.once("open", () => {
        clearTimeout(timer);
        resolve(raw);
      });
      socket.once("error", (error) => {
        clearTimeout(timer);
        reject(error);
      });
    });
  }

  send(data: string | Buffer): void {
    this.socket.send(data);
  }

  /** Waits for the first frame (from `fromIndex` on) that matches. */
  async frame(matches: (value: Record<string, unknown>) => boolean, deadlineMs = 5000, fromIndex = 0): Promise<Record<string, unknown>> {
    const found = (): Record<string, unknown> | undefined => {
      for (const frame of this.frames.slice(fromIndex)) {
        const value = frame.value;
        if (typeof value === "object" && value !== null && !Array.isArray(value) && matches(value as Record<string, unknown>)) {
          return value as Record<string, unknown>;
        }
      }
      return undefined;
    };
    await this.until(() => found() !== undefined || this.closeCode !== undefined, deadlineMs, "a matching frame");
    const frame = found();
    if (frame === undefined) throw new Error(`socket closed with ${String(this.closeCode)} before a matching frame arrived`);
    return frame;
  }

  async closed(deadlineMs = 5000): Promise<number> {
    await this.until(() => this.closeCode !== undefined, deadlineMs, "the close");
    return this.closeCode ?? 0;
  }

  close(): void {
    this.socket.close();
  }

  private until(condition: () => boolean, deadlineMs: number, what: string): Promise<void> {
    if (condition()) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiters.delete(check);
        reject(new Error(`waited ${deadlineMs} ms for ${what}`));
      }, deadlineMs);
      const check = (): void => {
        if (!condition()) return;
        clearTimeout(timer);
        this.waiters.delete(check);
        resolve();
      };
      this.waiters.add(check);
    });
  }

  private notify(): void {
    for (const waiter of [...this.waiters]) waiter();
  }
}
