// Carries many requests of one kind to one worker in one NATS request and hands each its own reply from
// the one reply that answers them all: cell.send in cell.sendBatch (docs/decisions/0009), cell.mailboxPage
// in cell.mailboxPageBatch (docs/decisions/0042). The requests a process makes within one turn of its
// event loop to the same worker leave together, on the next turn (setImmediate), or at once when the batch
// reaches sendBatchItemsMax or sendBatchBytesMax: no timer waits for more, so a lone request is not
// delayed. One NATS request, one reply, one request timer per batch instead of per request; the worker
// stores a batch of sends in one statement and reads a batch of pages in one.
//
// To the caller a batched request behaves as a single one: it resolves with its own reply, or rejects with
// UnavailableError when the batch got no reply in time (nobody listening, a dead worker), with
// BadPayloadError when the reply does not decode or does not answer every request.
import type { NatsConnection } from "@nats-io/transport-node";
import {
  cellMailboxPageBatchReplies,
  cellSendBatchReplies,
  sendBatchBytesMax,
  sendBatchItemsMax,
  type CellMailboxPageRequest,
  type CellReply,
  type CellRequestBatch,
  type CellSendRequest,
  type Decoder,
} from "@cellwire/protocol";
import { BadPayloadError, UnavailableError } from "./errors.ts";
import { decodeMessage, describeFailure } from "./nats-json.ts";
import { RequestMux } from "./request-mux.ts";
import { activeTracing, type TraceContext } from "./tracing/tracing.ts";

type Waiting = {
  readonly encoded: string;
  readonly timeoutMs: number;
  readonly resolve: (reply: CellReply) => void;
  readonly reject: (error: unknown) => void;
  /** The send's span (the edge's frame) when tracing is on: its context travels in the batch's headers. */
  readonly trace: TraceContext | undefined;
};

type Batch = { readonly items: Waiting[]; bytes: number };

/** What a batch of `Item`s is called on the wire, where its items go, and what answers it. */
export type BatchKind<Item extends CellSendRequest | CellMailboxPageRequest> = {
  readonly itemType: Item["type"];
  readonly batchType: CellRequestBatch["type"];
  readonly itemsField: string;
  readonly replies: Decoder<{ readonly replies: CellReply[] }>;
};

export const sendBatches: BatchKind<CellSendRequest> = {
  itemType: "cell.send",
  batchType: "cell.sendBatch",
  itemsField: "sends",
  replies: cellSendBatchReplies,
};
export const mailboxPageBatches: BatchKind<CellMailboxPageRequest> = {
  itemType: "cell.mailboxPage",
  batchType: "cell.mailboxPageBatch",
  itemsField: "pages",
  replies: cellMailboxPageBatchReplies,
};

/** The envelope around the items: `{"type":"cell.sendBatch","budgetMs":…,"sends":[…]}`. */
const envelopeBytes = 64;

export class RequestBatcher<Item extends CellSendRequest | CellMailboxPageRequest> {
  private readonly batches = new Map<string, Batch>();
  private flushScheduled = false;

  private readonly requests: RequestMux;

  constructor(
    connection: NatsConnection,
    private readonly kind: BatchKind<Item>,
  ) {
    this.requests = RequestMux.of(connection);
  }

  /** Sends `request` to `subject` in the next batch for it; `timeoutMs` bounds the wait for its reply. */
  request(subject: string, request: Item, timeoutMs: number): Promise<CellReply> {
    const encoded = JSON.stringify(request);
    const trace = activeTracing()?.activeContext();
    // UTF-8 bytes, as NATS counts its payload: a string's length undercounts non-ASCII bodies up to 3 times.
    const bytes = Buffer.byteLength(encoded, "utf8") + 1;
    return new Promise<CellReply>((resolve, reject) => {
      let batch = this.batches.get(subject);
      // A request that would push the batch past its bounds goes out with the next one.
      if (batch !== undefined && (batch.items.length >= sendBatchItemsMax || batch.bytes + bytes > sendBatchBytesMax)) {
        this.batches.delete(subject);
        this.send(subject, batch);
        batch = undefined;
      }
      if (batch === undefined) {
        batch = { items: [], bytes: envelopeBytes };
        this.batches.set(subject, batch);
      }
      batch.items.push({ encoded, timeoutMs, resolve, reject, trace });
      batch.bytes += bytes;
      if (!this.flushScheduled) {
        this.flushScheduled = true;
        setImmediate(() => this.flush());
      }
    });
  }

  private flush(): void {
    this.flushScheduled = false;
    const batches = [...this.batches];
    this.batches.clear();
    for (const [subject, batch] of batches) this.send(subject, batch);
  }

  private send(subject: string, batch: Batch): void {
    const { items } = batch;
    // The batch is answered, or given up on, as one: the shortest wait of its requests bounds it.
    let timeoutMs = Number.POSITIVE_INFINITY;
    for (const item of items) timeoutMs = Math.min(timeoutMs, item.timeoutMs);
    const budgetMs = Math.max(0, Math.floor(timeoutMs));
    const { batchType, itemsField } = this.kind;
    const payload = `{"type":"${batchType}","budgetMs":${budgetMs},"${itemsField}":[${items.map((item) => item.encoded).join(",")}]}`;
    // One trace context per request, in order (nats-trace-headers.ts): the worker continues each one's
    // trace. With tracing off none: a send's trace id is derived from the send where a line needs it (0037).
    const tracing = activeTracing();
    const headers = tracing === undefined ? undefined : tracing.headersForEach(items.map((item) => item.trace));
    void this.requests.request(subject, payload, Math.max(1, budgetMs), headers).then((outcome) => {
      if (!outcome.ok) {
        const failure = new UnavailableError("cell_unavailable", `${subject}: ${describeFailure(outcome.reason, budgetMs)}`);
        for (const item of items) item.reject(failure);
        return;
      }
      {
        const decoded = decodeMessage(this.kind.replies, outcome.data);
        if (!decoded.ok || decoded.value.replies.length !== items.length) {
          const why = decoded.ok ? `${decoded.value.replies.length} replies to ${items.length} ${itemsField}` : decoded.reason;
          const error = new BadPayloadError(`the batch reply on ${subject} does not answer its ${itemsField}: ${why}`);
          for (const item of items) item.reject(error);
          return;
        }
        items.forEach((item, index) => {
          const itemReply = decoded.value.replies[index];
          if (itemReply === undefined) item.reject(new BadPayloadError(`the batch reply on ${subject} lacks reply ${index}`));
          else item.resolve(itemReply);
        });
      }
    });
  }
}
