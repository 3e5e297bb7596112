// A debug hook into an edge without changing it: the edge runs with `--inspect=127.0.0.1:0` (extraExecArgv),
// prints its inspector's WebSocket URL, and the benchmark speaks the Chrome DevTools Protocol to it to
// force a full GC, read V8's heap figures (process.memoryUsage() inside the edge) and, when asked, write a
// heap snapshot. Nothing of this runs unless the bench asks; the edge's own code is untouched.
import { createWriteStream } from "node:fs";
import { WebSocket } from "ws";

const callDeadlineMs = 60_000;
const snapshotDeadlineMs = 300_000;

/** The inspector URL in the line Node prints at start: "Debugger listening on ws://127.0.0.1:<port>/<id>". */
export function inspectorUrlOf(line: string): string | undefined {
  return /Debugger listening on (ws:\/\/127\.0\.0\.1:\d+\/[0-9a-f-]+)/.exec(line)?.[1];
}

export type HeapFigures = {
  /** V8's heap in use (live objects and garbage not yet collected), bytes. */
  readonly heapUsedBytes: number;
  readonly heapTotalBytes: number;
  /** Memory of C++ objects bound to JS objects (Buffers and the like), bytes. */
  readonly externalBytes: number;
  readonly arrayBuffersBytes: number;
};

type Pending = { readonly resolve: (result: unknown) => void; readonly reject: (error: Error) => void; readonly timer: NodeJS.Timeout };

export class InspectorError extends Error {
  override readonly name = "InspectorError";
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

export class InspectorSession {
  private nextId = 1;
  private readonly pending = new Map<number, Pending>();
  private readonly notificationListeners = new Map<string, (params: Record<string, unknown>) => void>();

  private constructor(private readonly socket: WebSocket) {
    socket.on("message", (data: Buffer) => this.receive(data.toString("utf8")));
    socket.on("close", () => this.failAll(new InspectorError("the inspector connection closed")));
  }

  static connect(url: string): Promise<InspectorSession> {
    return new Promise((resolve, reject) => {
      const socket = new WebSocket(url, { perMessageDeflate: false, maxPayload: 256 * 1024 * 1024 });
      socket.once("open", () => resolve(new InspectorSession(socket)));
      socket.once("error", (error) =>
        reject(new InspectorError(`cannot reach the inspector at ${url}: ${error.message}`, { cause: error })),
      );
    });
  }

  call(method: string, params: Record<string, unknown> = {}, deadlineMs = callDeadlineMs): Promise<unknown> {
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new InspectorError(`${method} not answered within ${deadlineMs} ms`));
      }, deadlineMs);
      this.pending.set(id, { resolve, reject, timer });
      this.socket.send(JSON.stringify({ id, method, params }));
    });
  }

  /** A full, blocking garbage collection in the edge. */
  async collectGarbage(): Promise<void> {
    await this.call("HeapProfiler.collectGarbage");
  }

  async heapFigures(): Promise<HeapFigures> {
    const result = await this.call("Runtime.evaluate", { expression: "JSON.stringify(process.memoryUsage())", returnByValue: true });
    const value = isRecord(result) && isRecord(result["result"]) ? result["result"]["value"] : undefined;
    if (typeof value !== "string") throw new InspectorError("process.memoryUsage() gave no value");
    const usage: unknown = JSON.parse(value);
    const field = (name: string): number => {
      const figure = isRecord(usage) ? usage[name] : undefined;
      if (typeof figure !== "number" || !Number.isFinite(figure)) throw new InspectorError(`process.memoryUsage() has no ${name}`);
      return figure;
    };
    return {
      heapUsedBytes: field("heapUsed"),
      heapTotalBytes: field("heapTotal"),
      externalBytes: field("external"),
      arrayBuffersBytes: field("arrayBuffers"),
    };
  }

  /** Writes a heap snapshot of the edge to `path` (open it in Chrome DevTools, Memory tab). */
  async writeHeapSnapshot(path: string): Promise<void> {
    const file = createWriteStream(path);
    this.notificationListeners.set("HeapProfiler.addHeapSnapshotChunk", (params) => {
      if (typeof params["chunk"] === "string") file.write(params["chunk"]);
    });
    try {
      await this.call("HeapProfiler.takeHeapSnapshot", { reportProgress: false }, snapshotDeadlineMs);
    } finally {
      this.notificationListeners.delete("HeapProfiler.addHeapSnapshotChunk");
      await new Promise<void>((resolve, reject) => file.end((error?: Error | null) => (error ? reject(error) : resolve())));
    }
  }

  close(): void {
    this.socket.close();
  }

  private receive(text: string): void {
    let message: unknown;
    try {
      message = JSON.parse(text);
    } catch {
      return;
    }
    if (!isRecord(message)) return;
    const { id, method } = message;
    if (typeof method === "string") {
      const params = message["params"];
      this.notificationListeners.get(method)?.(isRecord(params) ? params : {});
      return;
    }
    if (typeof id !== "number") return;
    const pending = this.pending.get(id);
    if (pending === undefined) return;
    this.pending.delete(id);
    clearTimeout(pending.timer);
    const error = message["error"];
    if (isRecord(error))
      pending.reject(
        new InspectorError(`inspector error: ${typeof error["message"] === "string" ? error["message"] : JSON.stringify(error)}`),
      );
    else pending.resolve(message["result"]);
  }

  private failAll(error: Error): void {
    for (const [id, pending] of this.pending) {
      this.pending.delete(id);
      clearTimeout(pending.timer);
      pending.reject(error);
    }
  }
}
