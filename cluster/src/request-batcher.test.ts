// RequestBatcher of sends over a fake NATS connection whose requests the test answers: what leaves in one request,
// where batches split, how one batch reply reaches each caller, and how a failed batch fails every send;
// then the same batcher for mailbox pages (docs/decisions/0042).
import { describe, expect, it } from "vitest";
import type { MsgHdrs, NatsConnection } from "@nats-io/transport-node";
import {
  cellMailboxPageBatch,
  cellSendBatch,
  decodeJsonText,
  sendBatchBytesMax,
  sendBatchItemsMax,
  type CellMailboxPageRequest,
  type CellReply,
  type CellSendBatch,
  type CellSendRequest,
} from "@cellwire/protocol";
import { BadPayloadError, UnavailableError } from "./errors.ts";
import { mailboxPageBatches, RequestBatcher, sendBatches } from "./request-batcher.ts";

const conversationId = "g-AAAAAAAAAAAAAAAAAAAAAA";
const encoder = new TextEncoder();

/** One request the batcher made; the test answers it with `reply` (JSON), `replyBytes`, `noResponders` or not at all. */
type SentRequest = {
  readonly subject: string;
  readonly bytes: number;
  readonly batch: CellSendBatch;
  readonly headers: MsgHdrs | undefined;
  reply(value: unknown): void;
  replyBytes(data: Uint8Array): void;
  /** The server's answer to a request nobody listens to: an empty 503 status message. */
  noResponders(): void;
};

type ReplyCallback = (error: Error | null, message: { subject: string; data: Uint8Array; headers?: { code: number } }) => void;

/**
 * The part of a NatsConnection the batcher's RequestMux uses: one subscription to its reply prefix,
 * publish() with a reply subject and status(). `closeNextPublish` makes the next publish throw, as on a closed connection.
 */
class FakeConnection {
  readonly requests: SentRequest[] = [];
  private replies: ReplyCallback | undefined;
  closeNextPublish = false;

  subscribe(_subject: string, options: { callback: ReplyCallback }): { closed: Promise<void>; unsubscribe(): void } {
    this.replies = options.callback;
    return { closed: new Promise<void>(() => undefined), unsubscribe: () => undefined };
  }

  publish(subject: string, payload: Uint8Array | string, options: { reply: string; headers?: MsgHdrs }): void {
    if (this.closeNextPublish) {
      this.closeNextPublish = false;
      throw new Error("connection closed");
    }
    const data = typeof payload === "string" ? encoder.encode(payload) : payload;
    const decoded = decodeJsonText(cellSendBatch, new TextDecoder().decode(data));
    if (!decoded.ok) throw new Error(`the batcher sent a batch that does not decode: ${decoded.failure.path} ${decoded.failure.reason}`);
    const deliver = (replyData: Uint8Array, headers?: { code: number }): void =>
      this.replies?.(null, { subject: options.reply, data: replyData, ...(headers === undefined ? {} : { headers }) });
    this.requests.push({
      subject,
      bytes: data.byteLength,
      batch: decoded.value,
      headers: options.headers,
      reply: (value) => deliver(encoder.encode(JSON.stringify(value))),
      replyBytes: (replyData) => deliver(replyData),
      noResponders: () => deliver(new Uint8Array(), { code: 503 }),
    });
  }

  /** The mux ends its waiting requests on a disconnect or a reconnect; this connection never has either. */
  async *status(): AsyncIterable<never> {}

  asNatsConnection(): NatsConnection {
    // The mux calls subscribe(), publish() and status() only; the rest of the interface is never touched.
    return this as unknown as NatsConnection;
  }
}

function send(index: number, body = `body ${index}`): CellSendRequest {
  return { type: "cell.send", senderUserId: "alice", senderDeviceId: "phone", conversationId, clientMessageId: `c-${index}`, body };
}

function stored(request: CellSendRequest, seq: number): CellReply {
  return {
    type: "cell.stored",
    message: {
      conversationId: request.conversationId,
      messageId: `m-${request.clientMessageId}`,
      seq,
      senderUserId: request.senderUserId,
      senderDeviceId: request.senderDeviceId,
      clientMessageId: request.clientMessageId,
      body: request.body,
      sentAtMs: 1_700_000_000_000,
    },
    deduplicated: false,
  };
}

/** Answers a batch as a worker would: each send stored, seqs in the batch's order from `firstSeq`. */
function storedReplies(request: SentRequest, firstSeq = 1): { type: "cell.sendBatchReplies"; replies: CellReply[] } {
  return { type: "cell.sendBatchReplies", replies: request.batch.sends.map((item, index) => stored(item, firstSeq + index)) };
}

/** One turn of the event loop: the batcher flushes on setImmediate. */
function nextTurn(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}

function settled<T>(promise: Promise<T>): Promise<{ ok: true; value: T } | { ok: false; error: unknown }> {
  return promise.then(
    (value) => ({ ok: true as const, value }),
    (error: unknown) => ({ ok: false as const, error }),
  );
}

function only<T>(items: readonly T[]): T {
  expect(items).toHaveLength(1);
  const [item] = items;
  if (item === undefined) throw new Error("no item");
  return item;
}

/**
 * Answers worker.2's batch, then expects every send of worker.1's batch to have failed cell_unavailable
 * with `why`: a failed batch fails its own sends and no others.
 */
async function expectOnlyWorker1Unavailable(
  connection: FakeConnection,
  failing: Promise<{ ok: true; value: CellReply } | { ok: false; error: unknown }>[],
  why: string,
): Promise<void> {
  const toOther = connection.requests.find((request) => request.subject === "worker.2");
  toOther?.reply(storedReplies(toOther));
  for (const outcome of await Promise.all(failing)) {
    expect(outcome.ok).toBe(false);
    if (outcome.ok) continue;
    expect(outcome.error).toBeInstanceOf(UnavailableError);
    expect(outcome.error).toMatchObject({ code: "cell_unavailable", message: `worker.1: ${why}` });
  }
}

describe("RequestBatcher of sends", () => {
  it("sends the sends of one turn to one subject in one request on the next turn, one request per subject, each caller getting its own reply", async () => {
    const connection = new FakeConnection();
    const batcher = new RequestBatcher(connection.asNatsConnection(), sendBatches);
    const first = batcher.request("worker.1", send(1), 1000);
    const second = batcher.request("worker.1", send(2), 1000);
    const third = batcher.request("worker.2", send(3), 1000);
    // Nothing leaves within the turn: the other sends of the turn may still join.
    expect(connection.requests).toEqual([]);
    await nextTurn();
    expect(connection.requests.map((request) => [request.subject, request.batch.sends.map((item) => item.clientMessageId)])).toEqual([
      ["worker.1", ["c-1", "c-2"]],
      ["worker.2", ["c-3"]],
    ]);
    const [toFirstWorker, toSecondWorker] = connection.requests;
    if (toFirstWorker === undefined || toSecondWorker === undefined) throw new Error("two requests expected");
    // Replies in the batch's order, each to its own caller; one of them an error for that send only.
    const overloaded: CellReply = { type: "cell.error", code: "overloaded", message: "queue full", retryAfterMs: 200 };
    toFirstWorker.reply({ type: "cell.sendBatchReplies", replies: [stored(send(1), 7), overloaded] });
    toSecondWorker.reply(storedReplies(toSecondWorker, 9));
    expect(await first).toEqual(stored(send(1), 7));
    expect(await second).toEqual(overloaded);
    expect(await third).toEqual(stored(send(3), 9));
  });

  it("starts a new batch on each turn: a send of a later turn never waits for an earlier batch", async () => {
    const connection = new FakeConnection();
    const batcher = new RequestBatcher(connection.asNatsConnection(), sendBatches);
    const early = batcher.request("worker.1", send(1), 1000);
    await nextTurn();
    const late = batcher.request("worker.1", send(2), 1000);
    await nextTurn();
    expect(connection.requests.map((request) => request.batch.sends.map((item) => item.clientMessageId))).toEqual([["c-1"], ["c-2"]]);
    const [earlyRequest, lateRequest] = connection.requests;
    lateRequest?.reply(storedReplies(lateRequest, 2));
    expect(await late).toEqual(stored(send(2), 2));
    earlyRequest?.reply(storedReplies(earlyRequest, 1));
    expect(await early).toEqual(stored(send(1), 1));
  });

  it(`splits a turn's sends past sendBatchItemsMax (${sendBatchItemsMax}) and keeps every reply with its caller`, async () => {
    const connection = new FakeConnection();
    const batcher = new RequestBatcher(connection.asNatsConnection(), sendBatches);
    const count = 2 * sendBatchItemsMax + 3;
    const replies = Array.from({ length: count }, (_, index) => batcher.request("worker.1", send(index), 1000));
    await nextTurn();
    expect(connection.requests.map((request) => request.batch.sends.length)).toEqual([sendBatchItemsMax, sendBatchItemsMax, 3]);
    let seq = 1;
    for (const request of connection.requests) {
      request.reply(storedReplies(request, seq));
      seq += request.batch.sends.length;
    }
    const answered = await Promise.all(replies);
    expect(
      answered.map((reply) => (reply.type === "cell.stored" ? [reply.message.clientMessageId, reply.message.seq] : reply.type)),
    ).toEqual(Array.from({ length: count }, (_, index) => [`c-${index}`, index + 1]));
  });

  it.each([
    ["ASCII", "a"],
    // Three bytes in UTF-8 for one UTF-16 unit: the bound is on bytes, as NATS counts its payload.
    ["CJK", "中"],
    // Four bytes for two units (a surrogate pair).
    ["emoji", "😀"],
  ])(`splits a turn's sends past sendBatchBytesMax (${sendBatchBytesMax} bytes) with %s bodies`, async (_label, character) => {
    const connection = new FakeConnection();
    const batcher = new RequestBatcher(connection.asNatsConnection(), sendBatches);
    const body = character.repeat(Math.floor(30_000 / character.length));
    const count = 40;
    const replies = Array.from({ length: count }, (_, index) => batcher.request("worker.1", send(index, body), 1000));
    await nextTurn();
    expect(connection.requests.length).toBeGreaterThan(1);
    for (const request of connection.requests) expect(request.bytes).toBeLessThanOrEqual(sendBatchBytesMax);
    // No needless split: each batch but the last was full, give or take one send.
    const sendBytes = encoder.encode(JSON.stringify(send(0, body))).byteLength;
    for (const request of connection.requests.slice(0, -1)) expect(request.bytes + sendBytes).toBeGreaterThan(sendBatchBytesMax);
    expect(connection.requests.flatMap((request) => request.batch.sends.map((item) => item.clientMessageId))).toEqual(
      Array.from({ length: count }, (_, index) => `c-${index}`),
    );
    for (const request of connection.requests) request.reply(storedReplies(request));
    expect(
      (await Promise.all(replies)).map((reply) => (reply.type === "cell.stored" ? reply.message.clientMessageId : reply.type)),
    ).toEqual(Array.from({ length: count }, (_, index) => `c-${index}`));
  });

  it("gives the batch the smallest timeout of its sends, as the worker's budgetMs", async () => {
    const connection = new FakeConnection();
    const batcher = new RequestBatcher(connection.asNatsConnection(), sendBatches);
    void batcher.request("worker.1", send(1), 900).catch(() => undefined);
    void batcher.request("worker.1", send(2), 250.7).catch(() => undefined);
    void batcher.request("worker.1", send(3), 4000).catch(() => undefined);
    await nextTurn();
    expect(only(connection.requests).batch.budgetMs).toBe(250);
  });

  it("rejects every send of the batch with UnavailableError when no reply comes within the smallest timeout, and no send of another batch", async () => {
    const connection = new FakeConnection();
    const batcher = new RequestBatcher(connection.asNatsConnection(), sendBatches);
    const startedAt = performance.now();
    const failing = [batcher.request("worker.1", send(1), 30), batcher.request("worker.1", send(2), 5000)].map(settled);
    const other = batcher.request("worker.2", send(3), 5000);
    await nextTurn();
    await expectOnlyWorker1Unavailable(connection, failing, "no reply within 30 ms");
    // The mux sweeps timeouts in 25 ms buckets: never early, at most a bucket or two late.
    expect(performance.now() - startedAt).toBeGreaterThanOrEqual(29);
    expect(await other).toEqual(stored(send(3), 1));
  });

  it.each([
    ["no responders", (connection: FakeConnection) => connection.requests[0]?.noResponders(), "no responders"],
    [
      "a closed connection",
      (connection: FakeConnection) => {
        connection.closeNextPublish = true;
      },
      "the connection is closed",
    ],
  ])("rejects every send of the batch with UnavailableError on %s, and no send of another batch", async (label, failure, why) => {
    const connection = new FakeConnection();
    const batcher = new RequestBatcher(connection.asNatsConnection(), sendBatches);
    if (label === "a closed connection") failure(connection);
    const failing = [batcher.request("worker.1", send(1), 500), batcher.request("worker.1", send(2), 500)].map(settled);
    const other = batcher.request("worker.2", send(3), 500);
    await nextTurn();
    if (label === "no responders") failure(connection);
    await expectOnlyWorker1Unavailable(connection, failing, why);
    expect(await other).toEqual(stored(send(3), 1));
  });

  it.each([
    [
      "fewer replies than sends",
      encoder.encode(JSON.stringify({ type: "cell.sendBatchReplies", replies: [stored(send(1), 1)] })),
      "1 replies to 2 sends",
    ],
    [
      "more replies than sends",
      encoder.encode(
        JSON.stringify({ type: "cell.sendBatchReplies", replies: [stored(send(1), 1), stored(send(2), 2), stored(send(3), 3)] }),
      ),
      "3 replies to 2 sends",
    ],
    ["a reply that is not JSON", encoder.encode("stored, probably"), "$"],
    ["a single reply instead of the batch's", encoder.encode(JSON.stringify(stored(send(1), 1))), "$"],
  ])("rejects every send of the batch with BadPayloadError on %s", async (_label, data, detail) => {
    const connection = new FakeConnection();
    const batcher = new RequestBatcher(connection.asNatsConnection(), sendBatches);
    const outcomes = [batcher.request("worker.1", send(1), 500), batcher.request("worker.1", send(2), 500)].map(settled);
    await nextTurn();
    only(connection.requests).replyBytes(data);
    for (const outcome of await Promise.all(outcomes)) {
      expect(outcome.ok).toBe(false);
      if (outcome.ok) continue;
      expect(outcome.error).toBeInstanceOf(BadPayloadError);
      expect(outcome.error).toMatchObject({ code: "internal", message: expect.stringContaining(detail) });
    }
  });

  it("sends a batch without headers when tracing is off: a send's trace id is derived from the send (docs/decisions/0037)", async () => {
    const connection = new FakeConnection();
    const batcher = new RequestBatcher(connection.asNatsConnection(), sendBatches);
    const replies = [batcher.request("worker.1", send(1), 1000), batcher.request("worker.1", send(2), 1000)];
    await nextTurn();
    const request = only(connection.requests);
    expect(request.headers).toBeUndefined();
    request.reply(storedReplies(request));
    await Promise.all(replies);
  });
});

describe("RequestBatcher of mailbox pages", () => {
  /** Records what the batcher publishes and lets the test answer it: the same seam as FakeConnection. */
  function pageConnection(): {
    readonly published: { subject: string; payload: string; answer(value: unknown): void }[];
    readonly connection: NatsConnection;
  } {
    const published: { subject: string; payload: string; answer(value: unknown): void }[] = [];
    let replies: ReplyCallback | undefined;
    const fake = {
      subscribe: (_subject: string, options: { callback: ReplyCallback }) => {
        replies = options.callback;
        return { closed: new Promise<void>(() => undefined), unsubscribe: () => undefined };
      },
      publish: (subject: string, payload: Uint8Array | string, options: { reply: string }) => {
        const text = typeof payload === "string" ? payload : new TextDecoder().decode(payload);
        published.push({
          subject,
          payload: text,
          answer: (value) => replies?.(null, { subject: options.reply, data: encoder.encode(JSON.stringify(value)) }),
        });
      },
      status: async function* (): AsyncIterable<never> {},
    };
    return { published, connection: fake as unknown as NatsConnection };
  }

  const page = (userId: string, afterSeq: number) => ({ type: "cell.mailboxPage", userId, afterSeq, limit: 100 }) as const;

  it("sends one turn's pages to a worker as one cell.mailboxPageBatch and hands each page its own reply", async () => {
    const { published, connection } = pageConnection();
    const batcher = new RequestBatcher(connection, mailboxPageBatches);
    const alice = batcher.request("cells.a.w1", page("alice", 0), 2_000);
    const bob = batcher.request("cells.a.w1", page("bob", 7), 1_000);
    const carol = batcher.request("cells.a.w2", page("carol", 0), 2_000);
    await new Promise((resolve) => setImmediate(resolve));
    expect(published.map((item) => item.subject)).toEqual(["cells.a.w1", "cells.a.w2"]);
    const first = decodeJsonText(cellMailboxPageBatch, published[0]?.payload ?? "");
    expect(first.ok && first.value).toEqual({ type: "cell.mailboxPageBatch", budgetMs: 1_000, pages: [page("alice", 0), page("bob", 7)] });
    const pageReply = (userId: string, headSeq: number): CellReply => ({
      type: "cell.mailboxEvents",
      userId,
      events: [],
      headSeq,
      floorSeq: 0,
    });
    const notOwner: CellReply = { type: "cell.error", code: "not_owner", message: "bob is w2's" };
    published[0]?.answer({ type: "cell.mailboxPageBatchReplies", replies: [pageReply("alice", 3), notOwner] });
    published[1]?.answer({ type: "cell.mailboxPageBatchReplies", replies: [pageReply("carol", 0)] });
    await expect(alice).resolves.toEqual(pageReply("alice", 3));
    await expect(bob).resolves.toEqual(notOwner);
    await expect(carol).resolves.toEqual(pageReply("carol", 0));
  });

  it("fails every page of a batch answered by another kind of batch reply", async () => {
    const { published, connection } = pageConnection();
    const batcher = new RequestBatcher(connection, mailboxPageBatches);
    const alice = batcher.request("cells.a.w1", page("alice", 0), 2_000);
    await new Promise((resolve) => setImmediate(resolve));
    published[0]?.answer({ type: "cell.sendBatchReplies", replies: [{ type: "cell.error", code: "internal", message: "x" }] });
    await expect(alice).rejects.toBeInstanceOf(BadPayloadError);
  });
});
