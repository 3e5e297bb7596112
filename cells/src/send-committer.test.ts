// The group commit on its own: a store whose batches the test completes one by one (each runs against a
// memory store, so the answers are real ones), an injected clock, and an ownership view the test changes
// between two batches.
import { describe, expect, it } from "vitest";
import fc from "fast-check";
import { cellReply, decode, type CellReply, type CellSendRequest } from "@cellwire/protocol";
import { sendTraceId, type LogFields } from "@cellwire/cluster";
import { SendCommitter, type SendCommitterLimits } from "./send-committer.ts";
import type { StoredMessage } from "./message-publisher.ts";
import { MemoryConversationStore } from "../test/memory-store.ts";
import { newGroupId } from "../test/store-contract.ts";
import type { AppendMessageInput, AppendMessageResult, SendKey } from "./store/store.ts";

const workerId = "a-1";
/** The bounds send-committer.ts puts on a retry-after. */
const retryAfterMsMin = 50;
const retryAfterMsMax = 2000;

/** One call of appendMessages, held until the test completes it. */
type HeldBatch = {
  readonly inputs: readonly AppendMessageInput[];
  readonly complete: () => Promise<void>;
  readonly fail: (error: Error) => void;
};

/** appendMessages that holds each batch until the test completes it against a memory store (or fails it). */
class HeldStore {
  readonly memory = new MemoryConversationStore();
  readonly held: HeldBatch[] = [];
  /** Every batch the committer asked for, held or done. */
  readonly batches: (readonly AppendMessageInput[])[] = [];
  /** Batches being stored at once, at most: the committer runs one at a time. */
  inFlightMax = 0;
  private inFlight = 0;

  appendMessages(inputs: readonly AppendMessageInput[]): Promise<AppendMessageResult[]> {
    this.batches.push(inputs);
    this.inFlight += 1;
    this.inFlightMax = Math.max(this.inFlightMax, this.inFlight);
    return new Promise((resolve, reject) => {
      this.held.push({
        inputs,
        complete: async () => {
          this.inFlight -= 1;
          resolve(await this.memory.appendMessages(inputs));
        },
        fail: (error) => {
          this.inFlight -= 1;
          reject(error);
        },
      });
    });
  }

  /** Every settledSends read: the keys it asked for. */
  readonly reads: string[][] = [];

  settledSends(keys: readonly SendKey[]): Promise<ReadonlySet<string>> {
    this.reads.push(keys.map((key) => key.clientMessageId));
    return this.memory.settledSends(keys);
  }

  /** Completes the oldest held batch and lets the committer act on it. */
  async completeNext(): Promise<readonly AppendMessageInput[]> {
    const batch = this.held.shift();
    if (batch === undefined) throw new Error("no batch is held");
    await batch.complete();
    await settle();
    return batch.inputs;
  }
}

/** Lets every promise chain started so far run to its end (nothing here waits on a timer). */
function settle(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}

type Options = {
  limits?: Partial<SendCommitterLimits>;
  publish?: (messages: readonly StoredMessage[]) => Promise<void> | undefined;
  linger?: { lingerMs: number; busyWindowMs: number; busySendsMin?: number };
  /** Ride through an unreachable database for this long after a send's receipt (the sleeps advance the clock). */
  retryWindowMs?: number;
};

function setup(options: Options = {}) {
  const store = new HeldStore();
  const clock = { nowMs: 1000 };
  const ring = { epoch: 3, owners: new Map<string, string>(), leaseHeld: true };
  /** Lingering starts the test fires by hand (fire), or cancelled by the committer. */
  const timers: { readonly ms: number; fire: () => void; cancelled: boolean }[] = [];
  /** What happened, in order: `reply <clientMessageId> <outcome>` and `publish <bodies>`. */
  const events: string[] = [];
  const published: StoredMessage[][] = [];
  const warnings: string[] = [];
  const errors: string[] = [];
  /** The fields of each error line, in order (undefined for a line without any). */
  const errorFields: (LogFields | undefined)[] = [];
  /** The backoffs the committer slept, in order. */
  const sleeps: number[] = [];
  /** Each batch's size as the committer reported it to its metrics. */
  const batchSizes: number[] = [];
  /** Each fenced write the committer told its ownership of: `<key> under <epoch>`. */
  const fenced: string[] = [];
  const committer = new SendCommitter({
    workerId,
    metrics: { batchStarted: (sendCount) => void batchSizes.push(sendCount) },
    store,
    ownership: {
      snapshot: () => ({ ring: { ownerOf: (key: string) => ring.owners.get(key) ?? workerId }, ringEpoch: ring.epoch }),
      leaseHeld: () => ring.leaseHeld,
      fenced: (key, epoch) => void fenced.push(`${key} under ${epoch}`),
    },
    publish:
      options.publish ??
      (async (messages) => {
        published.push([...messages]);
        events.push(`publish ${messages.map((stored) => stored.message.body).join(",")}`);
      }),
    monotonicNowMs: () => clock.nowMs,
    logger: {
      info: () => undefined,
      warn: (line: string) => void warnings.push(line),
      error: (line: string, fields?: LogFields) => {
        errors.push(line);
        errorFields.push(fields);
      },
    },
    limits: { batchSendsMax: 100, pendingSendsMax: 1000, queueWaitMsMax: 1000, ...options.limits },
    ...(options.linger === undefined
      ? {}
      : {
          linger: {
            // 2 unless a test says otherwise: busy when the send before arrived within the window.
            busySendsMin: 2,
            ...options.linger,
            setTimer: (ms: number, callback: () => void) => {
              const timer = { ms, fire: callback, cancelled: false };
              timers.push(timer);
              return () => {
                timer.cancelled = true;
              };
            },
          },
        }),
    ...(options.retryWindowMs === undefined
      ? {}
      : {
          retry: {
            windowMs: options.retryWindowMs,
            random: () => 0.5,
            sleep: (ms: number) => {
              sleeps.push(ms);
              clock.nowMs += ms;
              return Promise.resolve();
            },
          },
        }),
  });
  const replies = new Map<string, CellReply[]>();
  /** Submits a send; its replies are kept under its label (a send answered twice would show). */
  function submit(send: CellSendRequest, budgetMs = 10_000, label = send.body): void {
    committer.submit(send, budgetMs, (reply) => {
      replies.set(label, [...(replies.get(label) ?? []), reply]);
      events.push(`reply ${label} ${outcomeOf(reply)}`);
    });
  }
  function replyOf(label: string): CellReply {
    const answered = replies.get(label) ?? [];
    expect(answered, `replies to ${label}`).toHaveLength(1);
    const [reply] = answered;
    if (reply === undefined) throw new Error(`no reply to ${label}`);
    return reply;
  }
  async function group(members: string[] = ["bob"]): Promise<string> {
    const conversationId = newGroupId();
    await store.memory.createGroup({ conversationId, creatorUserId: "alice", title: "t", memberUserIds: members, epoch: 1 });
    return conversationId;
  }
  return {
    store,
    clock,
    ring,
    timers,
    events,
    published,
    warnings,
    errors,
    errorFields,
    sleeps,
    batchSizes,
    fenced,
    committer,
    submit,
    replyOf,
    replies,
    group,
  };
}

function sendTo(conversationId: string, body: string, clientMessageId = body, senderUserId = "alice"): CellSendRequest {
  return { type: "cell.send", senderUserId, senderDeviceId: "phone", conversationId, clientMessageId, body };
}

/** A reply in a word: `stored <seq>` (with `again` when deduplicated), or the error code. */
function outcomeOf(reply: CellReply): string {
  if (reply.type === "cell.stored") return `stored ${reply.message.seq}${reply.deduplicated ? " again" : ""}`;
  if (reply.type === "cell.error") return reply.code;
  return reply.type;
}

/** An error as node-postgres reports a database that went away (a reset socket, a refused connection, a restart). */
function unreachable(code: string): Error {
  return Object.assign(new Error(`connect ${code}`), { code });
}

/** An overloaded reply: it decodes as the protocol says, and asks for a retry-after within the committer's bounds. */
function expectOverloaded(reply: CellReply): number {
  expect(decode(cellReply, reply).ok).toBe(true);
  if (reply.type !== "cell.error" || reply.code !== "overloaded" || reply.retryAfterMs === undefined) {
    throw new Error(`expected overloaded with a retry-after, got ${JSON.stringify(reply)}`);
  }
  expect(reply.retryAfterMs).toBeGreaterThanOrEqual(retryAfterMsMin);
  expect(reply.retryAfterMs).toBeLessThanOrEqual(retryAfterMsMax);
  return reply.retryAfterMs;
}

describe("SendCommitter metrics", () => {
  it("reports each statement's batch size, a retried attempt's too, for cellwire_worker_send_batch_size", async () => {
    const { store, submit, group, batchSizes } = setup({ retryWindowMs: 8000 });
    const conversationId = await group();
    submit(sendTo(conversationId, "a"));
    submit(sendTo(conversationId, "b"));
    submit(sendTo(conversationId, "c"));
    await store.completeNext();
    store.held.shift()?.fail(unreachable("ECONNRESET"));
    await settle();
    await store.completeNext();
    expect(batchSizes).toEqual([1, 2, 2]);
  });
});

describe("SendCommitter riding through an unreachable database", () => {
  it("tries a batch again after a backoff, with the sends that queued meanwhile, until it is stored; answers each send once", async () => {
    const { store, submit, replyOf, group, events, sleeps, warnings } = setup({ retryWindowMs: 8000 });
    const conversationId = await group();
    submit(sendTo(conversationId, "a"));
    store.held.shift()?.fail(unreachable("ECONNREFUSED"));
    submit(sendTo(conversationId, "b"));
    await settle();
    // Postgres restarting: it refuses connections, then answers 57P03 while it starts.
    store.held.shift()?.fail(Object.assign(new Error("the database system is starting up"), { code: "57P03" }));
    await settle();
    expect(events).toEqual([]);
    const stored = await store.completeNext();
    expect(stored.map((input) => input.body)).toEqual(["a", "b"]);
    expect(outcomeOf(replyOf("a"))).toBe("stored 1");
    expect(outcomeOf(replyOf("b"))).toBe("stored 2");
    expect(events).toEqual(["reply a stored 1", "reply b stored 2", "publish a,b"]);
    expect(sleeps).toHaveLength(2);
    expect(warnings).toEqual([expect.stringContaining("retrying 1 sends")]);
  });

  it("publishes a send that an attempt committed before its connection died, once, when the next attempt finds it stored", async () => {
    const { store, submit, replyOf, group, published } = setup({ retryWindowMs: 8000 });
    const conversationId = await group();
    submit(sendTo(conversationId, "lost ack"));
    const first = store.held.shift();
    if (first === undefined) throw new Error("no batch is held");
    // The commit reached Postgres; the connection died before its answer did.
    await store.memory.appendMessages(first.inputs);
    first.fail(new Error("Connection terminated unexpectedly"));
    await settle();
    await store.completeNext();
    expect(outcomeOf(replyOf("lost ack"))).toBe("stored 1 again");
    expect(published.map((batch) => batch.map((stored) => stored.message.body))).toEqual([["lost ack"]]);
  });

  it("answers cell_unavailable a send whose retry deadline comes before its next attempt, and keeps retrying the others", async () => {
    const { store, submit, replyOf, group, clock } = setup({ retryWindowMs: 8000 });
    const conversationId = await group();
    submit(sendTo(conversationId, "short"), 300);
    submit(sendTo(conversationId, "long"), 5000);
    // Both wait behind a first batch that holds the committer for 200 ms.
    const other = await group();
    submit(sendTo(other, "first"));
    await settle();
    expect(store.held).toHaveLength(1);
    store.held.shift()?.fail(Object.assign(new Error("terminating connection due to administrator command"), { code: "57P01" }));
    await settle();
    clock.nowMs += 250;
    store.held.shift()?.fail(unreachable("ECONNRESET"));
    await settle();
    expect(replyOf("short")).toMatchObject({ type: "cell.error", code: "cell_unavailable" });
    await store.completeNext();
    expect(outcomeOf(replyOf("long"))).toBe("stored 1");
    expect(outcomeOf(replyOf("first"))).toBe("stored 1");
  });

  it("gives up at the retry window even when the caller would wait longer, and never retries a failure that is not the database's absence", async () => {
    const { store, submit, replyOf, group, clock } = setup({ retryWindowMs: 1000 });
    const conversationId = await group();
    submit(sendTo(conversationId, "windowed"), 10_000);
    for (let attempt = 0; store.held.length > 0 && attempt < 200; attempt++) {
      store.held.shift()?.fail(unreachable("ECONNREFUSED"));
      await settle();
    }
    expect(replyOf("windowed")).toMatchObject({ type: "cell.error", code: "cell_unavailable" });
    expect(clock.nowMs - 1000).toBeLessThanOrEqual(1000);
    submit(sendTo(conversationId, "broken"));
    store.held.shift()?.fail(new Error("disk on fire"));
    await settle();
    expect(replyOf("broken")).toMatchObject({ type: "cell.error", code: "internal" });
    expect(store.held).toHaveLength(0);
  });

  it("answers the sends it was retrying as a lapsed lease does once the worker gave its lease up (the database watchdog)", async () => {
    const { store, submit, replyOf, group, ring } = setup({ retryWindowMs: 8000 });
    const conversationId = await group();
    submit(sendTo(conversationId, "stranded"));
    ring.leaseHeld = false;
    store.held.shift()?.fail(unreachable("ECONNREFUSED"));
    await settle();
    // The lapsed lease's answer: route again (to the workers that took the keys).
    expect(replyOf("stranded")).toMatchObject({ type: "cell.error", code: "not_owner", message: expect.stringContaining("lease") });
    expect(store.held).toHaveLength(0);
  });
});

describe("SendCommitter trace ids with tracing off (docs/decisions/0037)", () => {
  it("names a failed batch's send by the trace id derived from it, the one its edge names", async () => {
    const { store, committer, errors, errorFields, group } = setup();
    const conversationId = await group();
    const alone = sendTo(conversationId, "alone");
    committer.submit(alone, 10_000, () => undefined);
    store.held.shift()?.fail(new Error("disk on fire"));
    await settle();
    expect(errors).toHaveLength(1);
    expect(errorFields).toEqual([{ traceId: sendTraceId(alone) }]);
  });

  it("names every distinct trace id of a batch of several in traceIds", async () => {
    const { store, committer, errorFields, group } = setup();
    const conversationId = await group();
    const ignore = (): void => undefined;
    const a = sendTo(conversationId, "a");
    const b = sendTo(conversationId, "b");
    committer.submit(sendTo(conversationId, "first"), 10_000, ignore);
    committer.submit(a, 10_000, ignore);
    committer.submit(b, 10_000, ignore);
    await store.completeNext();
    store.held.shift()?.fail(new Error("disk on fire"));
    await settle();
    expect(errorFields).toEqual([{ traceIds: `${sendTraceId(a)},${sendTraceId(b)}` }]);
  });
});

describe("SendCommitter lingering", () => {
  it("lingers only once busySendsMin sends arrived within the busy window", async () => {
    const { store, clock, timers, submit, group } = setup({ linger: { lingerMs: 3, busyWindowMs: 20, busySendsMin: 4 } });
    const conversationId = await group();
    // Sends 10 ms apart: four of them span 30 ms, never within the window; each starts at once.
    for (const body of ["a", "b", "c", "d", "e"]) {
      submit(sendTo(conversationId, body));
      await store.completeNext();
      clock.nowMs += 10;
    }
    expect(timers).toEqual([]);
    // Three more 1 ms apart: with "e", four sends within 20 ms; the fourth lingers, and not before.
    for (const body of ["f", "g"]) {
      submit(sendTo(conversationId, body));
      await store.completeNext();
      clock.nowMs += 1;
    }
    expect(timers).toEqual([]);
    submit(sendTo(conversationId, "h"));
    expect(timers.map((timer) => timer.ms)).toEqual([3]);
    expect(store.batches.map((batch) => batch.map((input) => input.body))).toEqual([["a"], ["b"], ["c"], ["d"], ["e"], ["f"], ["g"]]);
    timers[0]?.fire();
    expect(store.batches.at(-1)?.map((input) => input.body)).toEqual(["h"]);
    await store.completeNext();
  });

  it("counts the sends that arrive while a batch is being stored", async () => {
    const { store, clock, timers, submit, group } = setup({ linger: { lingerMs: 3, busyWindowMs: 20, busySendsMin: 3 } });
    const conversationId = await group();
    submit(sendTo(conversationId, "a"));
    clock.nowMs += 1;
    submit(sendTo(conversationId, "b"));
    await store.completeNext();
    await store.completeNext();
    clock.nowMs += 1;
    // Three arrivals within 2 ms, one of them while "a" was being stored: busy.
    submit(sendTo(conversationId, "c"));
    expect(timers.map((timer) => timer.ms)).toEqual([3]);
    timers[0]?.fire();
    await store.completeNext();
  });

  it("starts a send at once when the worker is idle (its last batch is older than the busy window)", async () => {
    const { store, clock, timers, submit, group } = setup({ linger: { lingerMs: 3, busyWindowMs: 20 } });
    const conversationId = await group();
    submit(sendTo(conversationId, "first"));
    expect(store.batches).toHaveLength(1);
    await store.completeNext();
    clock.nowMs += 21;
    submit(sendTo(conversationId, "later"));
    expect(store.batches).toHaveLength(2);
    expect(timers).toEqual([]);
    await store.completeNext();
  });

  it("when busy, waits lingerMs for more sends and stores them in one batch", async () => {
    const { store, clock, timers, submit, replyOf, group } = setup({ linger: { lingerMs: 3, busyWindowMs: 20 } });
    const conversationId = await group();
    submit(sendTo(conversationId, "a"));
    await store.completeNext();
    clock.nowMs += 5;
    submit(sendTo(conversationId, "b"));
    submit(sendTo(conversationId, "c"));
    // Nothing goes to the store before the linger ends; one timer for both.
    expect(store.batches).toHaveLength(1);
    expect(timers.map((timer) => timer.ms)).toEqual([3]);
    timers[0]?.fire();
    expect(store.batches.map((batch) => batch.map((input) => input.body))).toEqual([["a"], ["b", "c"]]);
    await store.completeNext();
    expect([replyOf("b"), replyOf("c")].map(outcomeOf)).toEqual(["stored 2", "stored 3"]);
  });

  it("starts a lingering batch at once when it fills up, and the timer then starts nothing more", async () => {
    const { store, clock, timers, submit, group } = setup({ linger: { lingerMs: 3, busyWindowMs: 20 }, limits: { batchSendsMax: 2 } });
    const conversationId = await group();
    submit(sendTo(conversationId, "a"));
    await store.completeNext();
    clock.nowMs += 1;
    submit(sendTo(conversationId, "b"));
    expect(store.batches).toHaveLength(1);
    submit(sendTo(conversationId, "c"));
    expect(store.batches.map((batch) => batch.map((input) => input.body))).toEqual([["a"], ["b", "c"]]);
    expect(timers[0]?.cancelled).toBe(true);
    await store.completeNext();
  });

  it("counts a lingering send as work in whenIdle", async () => {
    const { store, clock, timers, committer, submit, group } = setup({ linger: { lingerMs: 3, busyWindowMs: 20 } });
    const conversationId = await group();
    submit(sendTo(conversationId, "a"));
    await store.completeNext();
    clock.nowMs += 1;
    submit(sendTo(conversationId, "b"));
    let idle = false;
    void committer.whenIdle().then(() => {
      idle = true;
    });
    await settle();
    expect(idle).toBe(false);
    timers[0]?.fire();
    await store.completeNext();
    await settle();
    expect(idle).toBe(true);
  });
});

describe("SendCommitter", () => {
  it("stores a lone send at once, under the ring's epoch, replies after the commit, then publishes it", async () => {
    const { store, events, published, submit, replyOf, group } = setup();
    const conversationId = await group();
    submit(sendTo(conversationId, "hello"));
    expect(store.batches).toEqual([
      [{ conversationId, senderUserId: "alice", senderDeviceId: "phone", clientMessageId: "hello", body: "hello", epoch: 3 }],
    ]);
    expect(events).toEqual([]);
    await store.completeNext();
    expect(events).toEqual(["reply hello stored 1", "publish hello"]);
    const reply = replyOf("hello");
    if (reply.type !== "cell.stored") throw new Error("expected stored");
    expect(reply).toEqual({
      type: "cell.stored",
      message: expect.objectContaining({ conversationId, seq: 1, body: "hello" }),
      deduplicated: false,
    });
    const members = await store.memory.members(conversationId);
    expect(published).toEqual([[{ message: reply.message, membersVersion: members.outcome === "members" ? members.membersVersion : -1 }]]);
  });

  it("stores the sends that arrived during a commit together in the next batch, one batch at a time, replying and publishing in order", async () => {
    const { store, events, submit, group } = setup();
    const [first, second] = [await group(), await group()];
    submit(sendTo(first, "a1"));
    submit(sendTo(first, "a2"));
    submit(sendTo(second, "b1"));
    submit(sendTo(first, "a3"));
    // a1 went alone (nobody waited); the others wait for its commit, not for a store call of their own.
    expect(store.batches.map((batch) => batch.map((input) => input.body))).toEqual([["a1"]]);
    await store.completeNext();
    expect(store.batches.map((batch) => batch.map((input) => input.body))).toEqual([["a1"], ["a2", "b1", "a3"]]);
    submit(sendTo(second, "b2"));
    await store.completeNext();
    await store.completeNext();
    expect(store.batches.map((batch) => batch.map((input) => input.body))).toEqual([["a1"], ["a2", "b1", "a3"], ["b2"]]);
    expect(store.inFlightMax).toBe(1);
    expect(events).toEqual([
      "reply a1 stored 1",
      "publish a1",
      "reply a2 stored 2",
      "reply b1 stored 1",
      "reply a3 stored 3",
      "publish a2,b1,a3",
      "reply b2 stored 2",
      "publish b2",
    ]);
  });

  it("takes at most batchSendsMax sends per batch; the rest wait for the next, in arrival order", async () => {
    const { store, submit, group } = setup({ limits: { batchSendsMax: 2 } });
    const conversationId = await group();
    for (let index = 1; index <= 6; index++) submit(sendTo(conversationId, `m${index}`));
    while (store.held.length > 0) await store.completeNext();
    expect(store.batches.map((batch) => batch.map((input) => input.body))).toEqual([["m1"], ["m2", "m3"], ["m4", "m5"], ["m6"]]);
  });

  it("checks ownership at its batch's start: not_owner for a key another worker owns now, lease_lapsed for all once the lease lapsed", async () => {
    const { store, ring, submit, replyOf, group, events } = setup();
    const [ours, theirs] = [await group(), await group()];
    submit(sendTo(ours, "first"));
    submit(sendTo(theirs, "moved away"));
    submit(sendTo(ours, "still ours"));
    // The ring changes while the first batch is stored: the next batch is checked against the new one.
    ring.owners.set(theirs, "a-2");
    ring.epoch = 4;
    await store.completeNext();
    expect(replyOf("moved away")).toMatchObject({ type: "cell.error", code: "not_owner", message: expect.stringContaining("a-2") });
    expect(store.batches.at(-1)).toEqual([expect.objectContaining({ body: "still ours", epoch: 4 })]);
    await store.completeNext();
    expect(outcomeOf(replyOf("still ours"))).toBe("stored 2");

    ring.owners.clear();
    submit(sendTo(ours, "held"));
    submit(sendTo(ours, "lapsed 1"));
    submit(sendTo(theirs, "lapsed 2"));
    ring.leaseHeld = false;
    await store.completeNext();
    for (const label of ["lapsed 1", "lapsed 2"])
      expect(replyOf(label)).toMatchObject({ type: "cell.error", code: "not_owner", message: expect.stringContaining("lease") });
    expect(store.batches).toHaveLength(3);
    expect(events.filter((line) => line.startsWith("publish"))).toEqual(["publish first", "publish still ours", "publish held"]);
  });

  it("refuses a send overloaded at once when pendingSendsMax sends wait, and never stores it", async () => {
    const { store, submit, replyOf, group } = setup({ limits: { pendingSendsMax: 2 } });
    const conversationId = await group();
    submit(sendTo(conversationId, "in flight"));
    submit(sendTo(conversationId, "waiting 1"));
    submit(sendTo(conversationId, "waiting 2"));
    submit(sendTo(conversationId, "one too many"));
    // Answered within submit, before any commit.
    expectOverloaded(replyOf("one too many"));
    while (store.held.length > 0) await store.completeNext();
    expect(store.batches.flat().map((input) => input.body)).toEqual(["in flight", "waiting 1", "waiting 2"]);
    // Room again once the queue drained.
    submit(sendTo(conversationId, "later"));
    await store.completeNext();
    expect(outcomeOf(replyOf("later"))).toBe("stored 4");
  });

  it("refuses overloaded a send that waited longer than queueWaitMsMax for its batch, and stores one that waited exactly that long", async () => {
    const { store, clock, submit, replyOf, group } = setup({ limits: { queueWaitMsMax: 100 } });
    const conversationId = await group();
    submit(sendTo(conversationId, "slow commit"));
    submit(sendTo(conversationId, "waited too long"));
    clock.nowMs += 101;
    await store.completeNext();
    expectOverloaded(replyOf("waited too long"));
    expect(store.batches).toHaveLength(1);
    submit(sendTo(conversationId, "another slow commit"));
    submit(sendTo(conversationId, "waited just enough"));
    clock.nowMs += 100;
    await store.completeNext();
    await store.completeNext();
    expect(outcomeOf(replyOf("waited just enough"))).toBe("stored 3");
  });

  it("refuses deadline_exceeded a send whose budget ran out before its batch started, and never stores it", async () => {
    const { store, clock, submit, replyOf, group } = setup();
    const conversationId = await group();
    submit(sendTo(conversationId, "slow commit"));
    submit(sendTo(conversationId, "gave up"), 50);
    submit(sendTo(conversationId, "still waiting"), 51);
    clock.nowMs += 50;
    await store.completeNext();
    expect(replyOf("gave up")).toMatchObject({ type: "cell.error", code: "deadline_exceeded" });
    expect(store.batches.at(-1)?.map((input) => input.body)).toEqual(["still waiting"]);
    await store.completeNext();
    expect(outcomeOf(replyOf("still waiting"))).toBe("stored 2");
    // A budget of 0: the caller has already given up.
    submit(sendTo(conversationId, "no budget"), 0);
    await settle();
    expect(replyOf("no budget")).toMatchObject({ type: "cell.error", code: "deadline_exceeded" });
    expect(store.batches).toHaveLength(2);
  });

  it("asks for a longer retry-after, within its bounds, as commits get slower", async () => {
    const { store, clock, submit, replyOf, group } = setup({ limits: { pendingSendsMax: 1 } });
    const conversationId = await group();
    const refusedAfter = async (commitMs: number, label: string): Promise<number> => {
      submit(sendTo(conversationId, `${label} commit`));
      clock.nowMs += commitMs;
      await store.completeNext();
      submit(sendTo(conversationId, `${label} commit 2`));
      submit(sendTo(conversationId, `${label} waiting`));
      submit(sendTo(conversationId, `${label} refused`));
      const retryAfterMs = expectOverloaded(replyOf(`${label} refused`));
      while (store.held.length > 0) await store.completeNext();
      return retryAfterMs;
    };
    const fast = await refusedAfter(1, "fast");
    const medium = await refusedAfter(300, "medium");
    const slow = await refusedAfter(60_000, "slow");
    expect(fast).toBe(retryAfterMsMin);
    expect(medium).toBeGreaterThan(fast);
    expect(medium).toBeLessThan(slow);
    expect(slow).toBe(retryAfterMsMax);
  });

  it("answers every send of a batch when the store throws, publishes none of it, and goes on with the next batch", async () => {
    const { store, submit, replyOf, group, errors, events } = setup();
    const conversationId = await group();
    submit(sendTo(conversationId, "first"));
    submit(sendTo(conversationId, "doomed 1"));
    submit(sendTo(conversationId, "doomed 2"));
    await store.completeNext();
    store.held.shift()?.fail(new Error("disk on fire"));
    await settle();
    for (const label of ["doomed 1", "doomed 2"]) {
      const reply = replyOf(label);
      expect(reply).toMatchObject({ type: "cell.error", code: "internal" });
      expect(JSON.stringify(reply)).not.toContain("disk on fire");
    }
    expect(errors).toEqual([expect.stringContaining("disk on fire")]);
    submit(sendTo(conversationId, "after"));
    await store.completeNext();
    expect(outcomeOf(replyOf("after"))).toBe("stored 2");
    expect(events.filter((line) => line.startsWith("publish"))).toEqual(["publish first", "publish after"]);
  });

  it("stores a send repeated within one batch once, answers both alike, and publishes it once; a later repeat is not published again", async () => {
    const { store, submit, replyOf, group, published } = setup();
    const conversationId = await group();
    submit(sendTo(conversationId, "first"));
    submit(sendTo(conversationId, "original", "retried"), 10_000, "attempt 1");
    submit(sendTo(conversationId, "original", "retried"), 10_000, "attempt 2");
    await store.completeNext();
    expect(store.batches[1]?.map((input) => input.body)).toEqual(["original"]);
    await store.completeNext();
    expect(replyOf("attempt 2")).toEqual(replyOf("attempt 1"));
    expect(outcomeOf(replyOf("attempt 1"))).toBe("stored 2");
    submit(sendTo(conversationId, "original", "retried"), 10_000, "attempt 3");
    await store.completeNext();
    expect(outcomeOf(replyOf("attempt 3"))).toBe("stored 2 again");
    expect(published.flat().map((stored) => stored.message.body)).toEqual(["first", "original"]);
  });

  it("refuses a clientMessageId reused with another body, within one batch and after the commit, and publishes only the original", async () => {
    const { store, submit, replyOf, group, published } = setup();
    const conversationId = await group();
    submit(sendTo(conversationId, "first"));
    submit(sendTo(conversationId, "original", "reused"), 10_000, "original");
    submit(sendTo(conversationId, "another message", "reused"), 10_000, "in the same batch");
    await store.completeNext();
    expect(store.batches[1]?.map((input) => input.body)).toEqual(["original"]);
    await store.completeNext();
    expect(outcomeOf(replyOf("original"))).toBe("stored 2");
    const refusal = replyOf("in the same batch");
    expect(decode(cellReply, refusal).ok).toBe(true);
    expect(outcomeOf(refusal)).toBe("client_message_id_reused");
    submit(sendTo(conversationId, "yet another", "reused"), 10_000, "in a later batch");
    await store.completeNext();
    expect(outcomeOf(replyOf("in a later batch"))).toBe("client_message_id_reused");
    expect(published.flat().map((stored) => stored.message.body)).toEqual(["first", "original"]);
  });

  it("maps each refusal of the store to its reply and publishes only the new messages", async () => {
    const { store, submit, replyOf, group, published, ring, warnings, fenced } = setup();
    const [open, frozen, gone, ahead] = [await group(), await group(), await group(), newGroupId()];
    await store.memory.freeze({ kind: "conversation", id: frozen, toCellId: "b", epoch: 1 });
    await store.memory.freeze({ kind: "conversation", id: gone, toCellId: "b", epoch: 1 });
    await store.memory.tombstone({ kind: "conversation", id: gone, toCellId: "b", movedEpoch: 7, epoch: 1 });
    await store.memory.createGroup({ conversationId: ahead, creatorUserId: "alice", title: "t", memberUserIds: [], epoch: ring.epoch + 1 });
    submit(sendTo(open, "first"));
    submit(sendTo(open, "not mine", "x", "mallory"));
    submit(sendTo(frozen, "frozen"));
    submit(sendTo(gone, "gone"));
    submit(sendTo(ahead, "behind"));
    submit(sendTo(open, "second"));
    await store.completeNext();
    await store.completeNext();
    expect(replyOf("not mine")).toMatchObject({ type: "cell.error", code: "not_a_member" });
    expect(replyOf("frozen")).toMatchObject({ type: "cell.error", code: "moving" });
    expect(replyOf("gone")).toEqual({ type: "cell.moved", kind: "conversation", id: gone, cellId: "b", epoch: 7 });
    expect(replyOf("behind")).toMatchObject({
      type: "cell.error",
      code: "not_owner",
      message: expect.stringContaining(`epoch after ${ring.epoch}`),
    });
    expect(outcomeOf(replyOf("second"))).toBe("stored 2");
    expect(published.flat().map((stored) => stored.message.body)).toEqual(["first", "second"]);
    // A fenced worker is a stale owner: it says so, as the request handler does for its writes.
    expect(warnings).toEqual([expect.stringMatching(new RegExp(`${workerId} was fenced on ${ahead}.*epoch after ${ring.epoch}`))]);
    // And its ownership hears of it, so that its ring's watch catches up.
    expect(fenced).toEqual([`${ahead} under ${ring.epoch}`]);
  });

  it("publishes batches one after another in commit order, even when a publish is slow, without holding up the commits", async () => {
    const gates: (() => void)[] = [];
    const started: string[] = [];
    const { store, submit, events, committer, group } = setup({
      publish: async (messages) => {
        started.push(messages.map((stored) => stored.message.body).join(","));
        await new Promise<void>((resolve) => gates.push(resolve));
      },
    });
    const conversationId = await group();
    submit(sendTo(conversationId, "m1"));
    await store.completeNext();
    submit(sendTo(conversationId, "m2"));
    await store.completeNext();
    submit(sendTo(conversationId, "m3"));
    await store.completeNext();
    // Commits and replies went on; the second publish waits for the first.
    expect(events).toEqual(["reply m1 stored 1", "reply m2 stored 2", "reply m3 stored 3"]);
    expect(started).toEqual(["m1"]);
    let idle = false;
    const whenIdle = committer.whenIdle().then(() => (idle = true));
    for (const expected of [
      ["m1", "m2"],
      ["m1", "m2", "m3"],
    ]) {
      gates.shift()?.();
      await settle();
      expect(started).toEqual(expected);
    }
    expect(idle).toBe(false);
    gates.shift()?.();
    await whenIdle;
  });

  it("publishes a batch in the same turn as its replies when no publish is in flight, so both leave in one NATS write", async () => {
    const { store, committer, events, group } = setup({
      // A publisher whose member lists are cached publishes at once and returns nothing to wait for.
      publish: (messages) => {
        events.push(`publish ${messages.map((stored) => stored.message.body).join(",")}`);
        return undefined;
      },
    });
    const conversationId = await group();
    // The NATS client writes what was published before its next microtask: mark where that comes.
    committer.submit(sendTo(conversationId, "m1"), 10_000, () => {
      events.push("reply m1");
      queueMicrotask(() => events.push("a microtask after the reply"));
    });
    await store.completeNext();
    expect(events).toEqual(["reply m1", "publish m1", "a microtask after the reply"]);
  });

  it("logs a failed publish and carries on publishing the next batches, whether the publish rejects or throws", async () => {
    let failure: "reject" | "throw" | undefined;
    const publishedBodies: string[] = [];
    const { store, submit, warnings, committer, group, replyOf } = setup({
      publish: (messages) => {
        if (failure === "throw") throw new Error("connection closed");
        if (failure === "reject") return Promise.reject(new Error("members unreadable"));
        publishedBodies.push(...messages.map((stored) => stored.message.body));
        return Promise.resolve();
      },
    });
    const conversationId = await group();
    for (const [label, mode] of [
      ["rejected", "reject"],
      ["thrown", "throw"],
      ["fine", undefined],
    ] as const) {
      failure = mode;
      submit(sendTo(conversationId, label));
      await store.completeNext();
      await committer.whenIdle();
      // Stored is stored: the sender has its ack whatever the publish did.
      expect(replyOf(label)).toMatchObject({ type: "cell.stored" });
    }
    expect(publishedBodies).toEqual(["fine"]);
    expect(warnings).toEqual([expect.stringContaining("members unreadable"), expect.stringContaining("connection closed")]);
  });

  it("refuses limits that cannot work", () => {
    const base = {
      workerId,
      store: new HeldStore(),
      ownership: { snapshot: () => ({ ring: { ownerOf: () => workerId }, ringEpoch: 1 }), leaseHeld: () => true },
    };
    const rest = {
      publish: async () => undefined,
      monotonicNowMs: () => 0,
      logger: { info: () => undefined, warn: () => undefined, error: () => undefined },
    };
    for (const limits of [
      { batchSendsMax: 0, pendingSendsMax: 1, queueWaitMsMax: 1 },
      { batchSendsMax: 1, pendingSendsMax: 0, queueWaitMsMax: 1 },
      { batchSendsMax: 1, pendingSendsMax: 1, queueWaitMsMax: 0 },
    ]) {
      expect(() => new SendCommitter({ ...base, ...rest, limits })).toThrow(RangeError);
    }
  });

  it("answers every send once, stores each key once and in arrival order per conversation, with one batch at a time (property)", async () => {
    // Mostly sends, so batches queue up behind the one being stored; budgets and clock steps make some
    // of them run out before their turn.
    const command = fc.oneof(
      {
        weight: 5,
        arbitrary: fc.record({
          kind: fc.constant("send" as const),
          conversation: fc.nat(2),
          key: fc.nat(11),
          budgetMs: fc.constantFrom(10_000, 10_000, 30),
        }),
      },
      { weight: 3, arbitrary: fc.record({ kind: fc.constant("complete" as const) }) },
      { weight: 1, arbitrary: fc.record({ kind: fc.constant("advance" as const), ms: fc.integer({ min: 1, max: 40 }) }) },
    );
    await fc.assert(
      fc.asyncProperty(
        fc.array(command, { maxLength: 60 }),
        fc.integer({ min: 1, max: 4 }),
        fc.integer({ min: 1, max: 8 }),
        async (commands, batchSendsMax, pendingSendsMax) => {
          const { store, clock, submit, replies, group, published, committer } = setup({
            limits: { batchSendsMax, pendingSendsMax, queueWaitMsMax: 60 },
          });
          const conversations = [await group(), await group(), await group()];
          const submitted: { label: string; conversationId: string; key: string }[] = [];
          for (const step of commands) {
            if (step.kind === "send") {
              const conversationId = conversations[step.conversation] ?? "";
              const label = `s${submitted.length}`;
              submitted.push({ label, conversationId, key: `k${step.key}` });
              submit(sendTo(conversationId, label, `k${step.key}`), step.budgetMs, label);
            } else if (step.kind === "complete") {
              if (store.held.length > 0) await store.completeNext();
            } else {
              clock.nowMs += step.ms;
            }
          }
          while (store.held.length > 0) await store.completeNext();
          await committer.whenIdle();
          expect(store.inFlightMax).toBeLessThanOrEqual(1);
          expect(store.batches.every((batch) => batch.length >= 1 && batch.length <= batchSendsMax)).toBe(true);
          // Every send answered exactly once.
          for (const { label } of submitted) expect(replies.get(label)?.length, label).toBe(1);
          // Per conversation: the keys stored once each, in the order their first stored send arrived.
          for (const conversationId of conversations) {
            const ours = submitted.filter((send) => send.conversationId === conversationId);
            const storedReplies = ours.flatMap(({ label, key }) => {
              const reply = replies.get(label)?.[0];
              return reply?.type === "cell.stored" ? [{ key, seq: reply.message.seq, deduplicated: reply.deduplicated }] : [];
            });
            const seqByKey = new Map<string, number>();
            for (const { key, seq } of storedReplies) {
              expect(seqByKey.get(key) ?? seq, `one seq for ${key}`).toBe(seq);
              seqByKey.set(key, seq);
            }
            const seqsInArrivalOrder = [...new Map(storedReplies.map(({ key, seq }) => [key, seq])).values()];
            expect(seqsInArrivalOrder).toEqual(seqsInArrivalOrder.map((_, index) => index + 1));
            // Published once each, in seq order.
            const publishedSeqs = published
              .flat()
              .filter((stored) => stored.message.conversationId === conversationId)
              .map((stored) => stored.message.seq);
            expect(publishedSeqs).toEqual(seqsInArrivalOrder);
          }
        },
      ),
      { numRuns: 200 },
    );
  });
});

describe("SendCommitter: pipelined sends keep their order (docs/decisions/0020)", () => {
  function after(send: CellSendRequest, afterClientMessageId: string): CellSendRequest {
    return { ...send, afterClientMessageId };
  }

  /** Completes the next batch once the committer has asked for it (a batch with predecessors may read first). */
  async function completeNext(store: HeldStore): Promise<void> {
    await settle();
    await store.completeNext();
  }

  it("stores a send whose predecessor is earlier in its batch, or stored by an earlier batch, with no read", async () => {
    const { store, submit, replyOf, group } = setup();
    const conversationId = await group();
    submit(sendTo(conversationId, "c0"));
    submit(after(sendTo(conversationId, "c1"), "c0"));
    submit(after(sendTo(conversationId, "c2"), "c1"));
    await completeNext(store);
    await completeNext(store);
    expect(store.batches.map((batch) => batch.map((input) => input.clientMessageId))).toEqual([["c0"], ["c1", "c2"]]);
    expect(["c0", "c1", "c2"].map((label) => outcomeOf(replyOf(label)))).toEqual(["stored 1", "stored 2", "stored 3"]);
    expect(store.reads).toEqual([]);
  });

  it("answers out_of_order the sends queued ahead of their predecessor's retry, so c0, c1, c2 are never stored as c1, c2, c0", async () => {
    const { store, submit, replies, replyOf, group } = setup();
    const conversationId = await group();
    // c0's first attempt is in the batch being stored (held on a row lock); the session pipelines c1 and
    // c2 behind it, then the edge's router, whose attempt timed out, sends c0 again: it queues last.
    submit(sendTo(conversationId, "c0"), 10_000, "c0 first");
    submit(after(sendTo(conversationId, "c1"), "c0"));
    submit(after(sendTo(conversationId, "c2"), "c1"));
    submit(sendTo(conversationId, "c0"), 10_000, "c0 retry");
    // The held statement fails (statement timeout): c0 was not stored by it.
    store.held.shift()?.fail(new Error("canceling statement due to statement timeout"));
    await completeNext(store);
    expect(store.batches.map((batch) => batch.map((input) => input.clientMessageId))).toEqual([["c0"], ["c0"]]);
    expect(outcomeOf(replyOf("c1"))).toBe("out_of_order");
    expect(outcomeOf(replyOf("c2"))).toBe("out_of_order");
    expect(outcomeOf(replyOf("c0 retry"))).toBe("stored 1");
    expect(decode(cellReply, replyOf("c1")).ok).toBe(true);
    // c0 was later in the batch than c1: the database was asked (once), and did not have it yet.
    expect(store.reads).toEqual([["c0"]]);
    // The client retries them in order: each finds its predecessor stored.
    replies.clear();
    submit(after(sendTo(conversationId, "c1"), "c0"));
    submit(after(sendTo(conversationId, "c2"), "c1"));
    await completeNext(store);
    await completeNext(store);
    expect(["c1", "c2"].map((label) => outcomeOf(replyOf(label)))).toEqual(["stored 2", "stored 3"]);
    const log = await store.memory.history({ conversationId, userId: "alice", beforeSeq: null, limit: 10 });
    expect(log.outcome === "history" && log.messages.map((message) => message.clientMessageId)).toEqual(["c0", "c1", "c2"]);
  });

  it("asks the database, once per batch, only for predecessors it neither stored nor has earlier in the batch", async () => {
    const { store, submit, replyOf, group } = setup();
    const conversationId = await group();
    // A predecessor stored by another worker (before a ring change) or before a restart.
    await store.memory.appendMessages([
      { conversationId, senderUserId: "alice", senderDeviceId: "phone", clientMessageId: "elsewhere", body: "elsewhere", epoch: 3 },
    ]);
    submit(after(sendTo(conversationId, "c3"), "elsewhere"));
    submit(after(sendTo(conversationId, "c4"), "never sent"));
    submit(after(sendTo(conversationId, "c5"), "c3"));
    submit(after(sendTo(conversationId, "c6"), "c4"));
    await completeNext(store);
    await completeNext(store);
    // c3 went alone (the committer was idle); c5's predecessor c3 was then remembered, c6's was earlier in its batch.
    expect(store.reads).toEqual([["elsewhere"], ["never sent"]]);
    expect(["c3", "c4", "c5", "c6"].map((label) => outcomeOf(replyOf(label)))).toEqual([
      "stored 2",
      "out_of_order",
      "stored 3",
      "out_of_order",
    ]);
  });

  it("answers a non-member's pipelined sends not_a_member, as the store does, not out_of_order: their predecessors can never be stored", async () => {
    const { store, submit, replyOf, group } = setup();
    const conversationId = await group(["bob"]);
    submit(sendTo(conversationId, "c0", "c0", "carol"));
    submit({ ...sendTo(conversationId, "c1", "c1", "carol"), afterClientMessageId: "c0" });
    await completeNext(store);
    await completeNext(store);
    expect(["c0", "c1"].map((label) => outcomeOf(replyOf(label)))).toEqual(["not_a_member", "not_a_member"]);
  });

  it("looks a predecessor up by the same sender: another user's send of that id does not count", async () => {
    const { store, submit, replyOf, group } = setup();
    const conversationId = await group(["bob"]);
    submit(sendTo(conversationId, "bob c0", "c0", "bob"));
    submit(after(sendTo(conversationId, "alice c1", "c1", "alice"), "c0"));
    await completeNext(store);
    await settle();
    expect(outcomeOf(replyOf("bob c0"))).toBe("stored 1");
    expect(outcomeOf(replyOf("alice c1"))).toBe("out_of_order");
  });
});
