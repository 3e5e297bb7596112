// Request/reply over one reply subscription per connection, for the hot paths between edges, workers and
// the directory. nats.js's own request() costs, per request, a random token, a timer, and (measured in
// the chat benchmark's CPU profiles) two Error objects with stack traces, one of them built even when the
// reply arrives in time: about a tenth of an edge's CPU under load. Here a request is a publish with a
// reply subject under this mux's prefix and an entry in a Map; timeouts are swept by one timer in 25 ms
// buckets; outcomes are values, not exceptions (docs/performance.md).
//
// When the connection drops, the requests waiting then end at once as `disconnected`: their message or
// their reply most likely went with the server (a restarted nats-server keeps neither). So do, once it is
// back, those made while it was down: nats.js empties its outgoing buffer at every reconnect attempt
// (protocol.js prepare(): resetOutbound), so they were never sent. Waiting for their timeouts instead
// cost every send made during a 2 s NATS restart a 3 s attempt timeout (docs/decisions/0025). Either
// way the caller retries, as after a timeout (the request may or may not have been served).
import type { MsgHdrs, NatsConnection, Subscription } from "@nats-io/transport-node";
import { randomBytes } from "node:crypto";

export type RequestOutcome =
  | { readonly ok: true; readonly data: Uint8Array }
  /**
   * No reply within the timeout; nobody listens on the subject (the server's 503); the connection is
   * closed; the connection dropped while the request waited (it may or may not have been served).
   */
  | { readonly ok: false; readonly reason: RequestFailure };

export type RequestFailure = "timeout" | "no_responders" | "closed" | "disconnected";

type Pending = { readonly resolve: (outcome: RequestOutcome) => void; readonly bucket: number };

/** Timeouts are checked this often: a request times out between timeoutMs and timeoutMs + this. */
const sweepIntervalMs = 25;

const muxes = new WeakMap<NatsConnection, RequestMux>();

export class RequestMux {
  private readonly prefix: string;
  private readonly subscription: Subscription;
  private readonly pending = new Map<string, Pending>();
  /** Expiry bucket (deadline / sweepIntervalMs, rounded up) → the tokens that expire in it. */
  private readonly buckets = new Map<number, Set<string>>();
  private counter = 0;
  private sweeper: ReturnType<typeof setInterval> | undefined;

  /** The mux of a connection, created on first use; it lives as long as the connection. */
  static of(connection: NatsConnection): RequestMux {
    let mux = muxes.get(connection);
    if (mux === undefined) {
      mux = new RequestMux(connection);
      muxes.set(connection, mux);
    }
    return mux;
  }

  private constructor(private readonly connection: NatsConnection) {
    // Unique per process and connection, under the connection's inbox prefix (`_INBOX.<service>`), the
    // only one its NATS user may subscribe to (docs/decisions/0015).
    this.prefix = `${inboxPrefixOf(connection)}.cw${randomBytes(9).toString("base64url")}.`;
    this.subscription = connection.subscribe(`${this.prefix}*`, {
      callback: (error, message) => {
        if (error !== null) return;
        const token = message.subject.slice(this.prefix.length);
        const waiting = this.pending.get(token);
        if (waiting === undefined) return;
        // The server answers a request to a subject nobody listens on with an empty 503 status message.
        const noResponders = message.data.length === 0 && message.headers?.code === 503;
        this.settle(token, waiting, noResponders ? { ok: false, reason: "no_responders" } : { ok: true, data: message.data });
      },
    });
    void this.subscription.closed.then(() => this.failAll("closed"));
    // The loop ends when the connection closes (nats.js stops its status iterators then).
    void (async () => {
      for await (const status of connection.status())
        if (status.type === "disconnect" || status.type === "reconnect") this.failAll("disconnected");
    })();
  }

  /** Requests waiting for their reply. */
  get pendingCount(): number {
    return this.pending.size;
  }

  /** `headers`: the trace context when tracing is on (tracing.ts); absent otherwise. */
  request(subject: string, payload: Uint8Array | string, timeoutMs: number, headers?: MsgHdrs): Promise<RequestOutcome> {
    const token = (this.counter++).toString(36);
    return new Promise<RequestOutcome>((resolve) => {
      const bucket = Math.ceil((performance.now() + Math.max(1, timeoutMs)) / sweepIntervalMs);
      this.pending.set(token, { resolve, bucket });
      let tokens = this.buckets.get(bucket);
      if (tokens === undefined) {
        tokens = new Set();
        this.buckets.set(bucket, tokens);
      }
      tokens.add(token);
      this.sweeper ??= this.startSweeper();
      try {
        const reply = `${this.prefix}${token}`;
        this.connection.publish(subject, payload, headers === undefined ? { reply } : { reply, headers });
      } catch {
        const waiting = this.pending.get(token);
        if (waiting !== undefined) this.settle(token, waiting, { ok: false, reason: "closed" });
      }
    });
  }

  private settle(token: string, waiting: Pending, outcome: RequestOutcome): void {
    this.pending.delete(token);
    const tokens = this.buckets.get(waiting.bucket);
    tokens?.delete(token);
    if (tokens?.size === 0) this.buckets.delete(waiting.bucket);
    waiting.resolve(outcome);
  }

  private startSweeper(): ReturnType<typeof setInterval> {
    const sweeper = setInterval(() => {
      const now = performance.now() / sweepIntervalMs;
      for (const [bucket, tokens] of this.buckets) {
        if (bucket > now) continue;
        this.buckets.delete(bucket);
        for (const token of tokens) {
          const waiting = this.pending.get(token);
          if (waiting === undefined) continue;
          this.pending.delete(token);
          waiting.resolve({ ok: false, reason: "timeout" });
        }
      }
      if (this.pending.size === 0) {
        clearInterval(sweeper);
        this.sweeper = undefined;
      }
    }, sweepIntervalMs);
    // Waiting replies never keep a process alive by themselves.
    sweeper.unref();
    return sweeper;
  }

  private failAll(reason: "closed" | "disconnected"): void {
    for (const [token, waiting] of [...this.pending]) this.settle(token, waiting, { ok: false, reason });
  }
}

/**
 * The inbox prefix the connection was opened with (nats.js keeps its options on the connection object but
 * not in the NatsConnection type), `_INBOX` when none was given: read as unknown and checked.
 */
function inboxPrefixOf(connection: NatsConnection): string {
  const options: unknown = Reflect.get(connection, "options");
  const prefix = typeof options === "object" && options !== null ? Reflect.get(options, "inboxPrefix") : undefined;
  return typeof prefix === "string" && /^[A-Za-z0-9_.-]{1,64}$/.test(prefix) ? prefix : "_INBOX";
}
