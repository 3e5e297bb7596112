// NatsDeliveryHub against the real NATS (docs/decisions/0011): a delivery.batch on the deliveries subject
// reaches this edge's sessions of its recipients through the DeliveryTarget method of each kind, with its
// frame already encoded (messages to deliverMessage, encoded once per message; events to deliver; typing
// to deliverTyping); recipients without a session here are skipped; a batch that does not decode is dropped
// whole with a warning; a session gets every batch published once its attach has resolved, until it
// detaches; publishTyping publishes one batch naming every recipient. Each test has its own namespace,
// and waits for a later batch (NATS keeps one publisher's order) before saying something did not arrive.
import { randomBytes } from "node:crypto";
import { afterAll, afterEach, describe, expect, it, vi } from "vitest";
import { connect, NoRespondersError, type NatsConnection } from "@nats-io/transport-node";
import { decodeMessage, sendTraceId, type LogFields } from "@cellwire/cluster";
import {
  decodeServerFrame,
  deliveriesSubject,
  deliveryBatch,
  typingFanOutMax,
  typingSubject,
  type DeliveryBatch,
  type MailboxEvent,
  type Message,
  type SequencedEvent,
} from "@cellwire/protocol";
import { NatsDeliveryHub, type DeliveryTarget } from "./delivery-hub.ts";
import { deferred, Waiters } from "../test/edge-fakes.ts";
import type { TypingIndicator } from "./typing/typing-relay.ts";

const namespacePrefix = `tdel${Date.now().toString(36)}${randomBytes(2).toString("hex")}`;
let namespaceCount = 0;
const conversationId = "g-AAAAAAAAAAAAAAAAAAAAAA";
const connections: NatsConnection[] = [];
const hubs: NatsDeliveryHub[] = [];

afterEach(() => {
  vi.restoreAllMocks();
});

afterAll(async () => {
  for (const hub of hubs) hub.stop();
  await Promise.all(connections.map((connection) => connection.close().catch(() => undefined)));
});

async function connection(): Promise<NatsConnection> {
  const opened = await connect({ servers: ["127.0.0.1:4222"] });
  connections.push(opened);
  return opened;
}

type Method = "deliver" | "deliverMessage" | "deliverTyping";

/** A session as the hub sees it: records each call with the frame text it was given. */
class RecordingTarget implements DeliveryTarget {
  readonly calls: { readonly method: Method; readonly value: unknown; readonly frame: string }[] = [];
  private readonly waiters = new Waiters();

  deliver(event: SequencedEvent, serializedFrame: string): void {
    this.record("deliver", event, serializedFrame);
  }

  deliverMessage(message: Message, serializedFrame: string): void {
    this.record("deliverMessage", message, serializedFrame);
  }

  deliverTyping(typing: TypingIndicator, serializedFrame: string): void {
    this.record("deliverTyping", typing, serializedFrame);
  }

  received(count: number): Promise<void> {
    return this.waiters.until(() => this.calls.length >= count, `${count} deliveries; got ${JSON.stringify(this.calls)}`);
  }

  /** The values handed to one method, in order. */
  valuesOf(method: Method): unknown[] {
    return this.calls.filter((call) => call.method === method).map((call) => call.value);
  }

  private record(method: Method, value: unknown, frame: string): void {
    this.calls.push({ method, value, frame });
    this.waiters.notify();
  }
}

function message(seq: number, senderUserId = "alice"): Message {
  return {
    conversationId,
    messageId: `m-${seq}`,
    seq,
    senderUserId,
    senderDeviceId: "phone",
    clientMessageId: `c-${seq}`,
    body: `message ${seq}`,
    sentAtMs: 1_700_000_000_000,
  };
}

function joined(afterSeq: number): MailboxEvent {
  return { kind: "joined", conversationId, conversationKind: "group", title: "team", afterSeq, addedByUserId: "alice" };
}

const indicator: TypingIndicator = { conversationId, userId: "alice", deviceId: "phone", expiresInMs: 5000 };

/** A fresh namespace with a publisher (as a worker is) and hubs on their own connections (as edges are). */
async function setup() {
  namespaceCount += 1;
  const namespace = `${namespacePrefix}n${namespaceCount}`;
  const subject = deliveriesSubject(namespace);
  const publisher = await connection();
  const warnings: string[] = [];
  async function hub(): Promise<{ hub: NatsDeliveryHub; connection: NatsConnection }> {
    const hubConnection = await connection();
    const created = new NatsDeliveryHub(hubConnection, namespace, (warning) => warnings.push(warning));
    hubs.push(created);
    return { hub: created, connection: hubConnection };
  }
  /** Publishes one batch (empty lists unless given) and flushes it to the server. */
  async function publish(batch: Partial<Omit<DeliveryBatch, "type">>): Promise<void> {
    const whole: DeliveryBatch = { type: "delivery.batch", messages: [], events: [], typing: [], ...batch };
    publisher.publish(subject, JSON.stringify(whole));
    await publisher.flush();
  }
  let sentinelSeq = 0;
  /**
   * Publishes a message to `sentinel` (a session of the user "sentinel" on the hub under test) and waits
   * for it: every batch the publisher published before has been handed over by then.
   */
  async function drained(sentinel: RecordingTarget): Promise<void> {
    sentinelSeq += 1;
    const before = sentinel.calls.length;
    await publish({ messages: [{ recipientUserIds: ["sentinel"], message: message(1000 + sentinelSeq) }] });
    await sentinel.received(before + 1);
  }
  return { namespace, subject, publisher, warnings, hub, publish, drained };
}

/** Counts the message frames encoded (JSON.stringify of a `{ type: "message" }` value) from now on. */
function countMessageFrameEncodings(): () => number {
  const stringify = vi.spyOn(JSON, "stringify");
  const isMessageFrame = (value: unknown): boolean =>
    typeof value === "object" && value !== null && "type" in value && value.type === "message";
  return () => stringify.mock.calls.filter((call) => isMessageFrame(call[0])).length;
}

describe("NatsDeliveryHub", () => {
  it("hands a batch's messages to every local session of each recipient, its events to their recipient, its typing to its recipients, with frames a client decodes", async () => {
    const { hub: started, publish, warnings } = await setup();
    const { hub } = await started();
    await hub.start();
    const [bobPhone, bobLaptop, carol, dave] = [new RecordingTarget(), new RecordingTarget(), new RecordingTarget(), new RecordingTarget()];
    await hub.attach("bob", bobPhone);
    await hub.attach("bob", bobLaptop);
    await hub.attach("carol", carol);
    await hub.attach("dave", dave);
    expect(hub.userCount).toBe(3);
    expect(hub.sessionCount("bob")).toBe(2);

    const encodings = countMessageFrameEncodings();
    const bobEvent: SequencedEvent = { seq: 4, event: joined(6) };
    const carolEvent: SequencedEvent = { seq: 9, event: joined(6) };
    // alice and zoe have no session here; dave is a recipient of nothing.
    await publish({
      messages: [
        { recipientUserIds: ["alice", "bob", "carol", "zoe"], message: message(7) },
        { recipientUserIds: ["bob"], message: message(8) },
      ],
      events: [
        { recipientUserId: "bob", ...bobEvent },
        { recipientUserId: "carol", ...carolEvent },
        { recipientUserId: "zoe", seq: 1, event: joined(0) },
      ],
      typing: [{ recipientUserIds: ["alice", "bob", "carol", "zoe"], ...indicator }],
    });
    await bobPhone.received(4);
    await bobLaptop.received(4);
    await carol.received(3);
    // Each message frame was encoded once for all its local sessions, not once per recipient or session.
    expect(encodings()).toBe(2);

    const typingFrame = { type: "typing", ...indicator };
    for (const target of [bobPhone, bobLaptop]) {
      expect(target.valuesOf("deliverMessage")).toEqual([message(7), message(8)]);
      expect(target.valuesOf("deliver")).toEqual([bobEvent]);
      expect(target.valuesOf("deliverTyping")).toEqual([indicator]);
    }
    expect(carol.valuesOf("deliverMessage")).toEqual([message(7)]);
    expect(carol.valuesOf("deliver")).toEqual([carolEvent]);
    expect(carol.valuesOf("deliverTyping")).toEqual([indicator]);
    // Each frame is the server frame the session writes as it is, valid for a client's decoder.
    const decodedFrames = (target: RecordingTarget, method: Method) =>
      target.calls.filter((call) => call.method === method).map((call) => decodeServerFrame(call.frame));
    expect(decodedFrames(bobPhone, "deliverMessage")).toEqual([
      { ok: true, value: { type: "message", message: message(7) } },
      { ok: true, value: { type: "message", message: message(8) } },
    ]);
    expect(decodedFrames(bobPhone, "deliver")).toEqual([{ ok: true, value: { type: "event", ...bobEvent } }]);
    expect(decodedFrames(carol, "deliver")).toEqual([{ ok: true, value: { type: "event", ...carolEvent } }]);
    expect(decodedFrames(carol, "deliverTyping")).toEqual([{ ok: true, value: typingFrame }]);
    expect(bobPhone.calls.map((call) => call.frame)).toEqual(bobLaptop.calls.map((call) => call.frame));
    expect(carol.calls.find((call) => call.method === "deliverMessage")?.frame).toBe(
      bobPhone.calls.find((call) => call.method === "deliverMessage")?.frame,
    );
    expect(dave.calls).toEqual([]);
    expect(warnings).toEqual([]);
  });

  it("encodes nothing for a batch none of whose recipients has a session here", async () => {
    const { hub: started, publish, drained, warnings } = await setup();
    const { hub } = await started();
    const sentinel = new RecordingTarget();
    await hub.attach("sentinel", sentinel);
    const encodings = countMessageFrameEncodings();
    await publish({
      messages: [{ recipientUserIds: ["yann", "zoe"], message: message(1) }],
      events: [{ recipientUserId: "zoe", seq: 1, event: joined(0) }],
      typing: [{ recipientUserIds: ["yann", "zoe"], ...indicator }],
    });
    await drained(sentinel);
    // The sentinel's message alone.
    expect(encodings()).toBe(1);
    expect(sentinel.calls).toHaveLength(1);
    expect(warnings).toEqual([]);
  });

  it("lets every edge read every batch: each hands it to its own sessions", async () => {
    const { hub: started, publish } = await setup();
    const [{ hub: first }, { hub: second }] = [await started(), await started()];
    await Promise.all([first.start(), second.start()]);
    const [bob, carol, bobElsewhere] = [new RecordingTarget(), new RecordingTarget(), new RecordingTarget()];
    await first.attach("bob", bob);
    await second.attach("carol", carol);
    await second.attach("bob", bobElsewhere);
    await publish({ messages: [{ recipientUserIds: ["bob", "carol"], message: message(1) }] });
    await publish({ messages: [{ recipientUserIds: ["carol"], message: message(2) }] });
    await carol.received(2);
    await bobElsewhere.received(1);
    await bob.received(1);
    expect(bob.valuesOf("deliverMessage")).toEqual([message(1)]);
    expect(bobElsewhere.valuesOf("deliverMessage")).toEqual([message(1)]);
    expect(carol.valuesOf("deliverMessage")).toEqual([message(1), message(2)]);
  });

  it("drops a batch that does not decode, whole, with a warning, and delivers the batches after it", async () => {
    const { hub: started, publish, publisher, subject, warnings } = await setup();
    const { hub } = await started();
    const dave = new RecordingTarget();
    await hub.attach("dave", dave);
    publisher.publish(subject, new TextEncoder().encode("not json"));
    // A valid message beside one with seq 0: nothing of the batch is handed over.
    await publish({
      messages: [
        { recipientUserIds: ["dave"], message: message(1) },
        { recipientUserIds: ["dave"], message: { ...message(2), seq: 0 } },
      ],
    });
    // A recipient that is no user id, as a subject wildcard would be.
    await publish({
      events: [{ recipientUserId: "dave", seq: 1, event: joined(0) }],
      typing: [{ recipientUserIds: ["dave", "victim.>"], ...indicator }],
    });
    // A message to nobody.
    await publish({ messages: [{ recipientUserIds: [], message: message(3) }] });
    await publish({ messages: [{ recipientUserIds: ["dave"], message: message(4) }] });
    await dave.received(1);
    expect(dave.calls.map((call) => call.value)).toEqual([message(4)]);
    expect(warnings).toHaveLength(4);
    for (const warning of warnings) expect(warning).toContain("does not decode");
  });

  it("hands a session attached after start() every batch published once its attach resolved, and nothing from before", async () => {
    const { hub: started, publish, drained } = await setup();
    const { hub } = await started();
    await hub.start();
    const sentinel = new RecordingTarget();
    await hub.attach("sentinel", sentinel);
    await publish({ messages: [{ recipientUserIds: ["erin", "sentinel"], message: message(1) }] });
    await sentinel.received(1);
    const erin = new RecordingTarget();
    await hub.attach("erin", erin);
    await publish({
      messages: [{ recipientUserIds: ["erin"], message: message(2) }],
      events: [{ recipientUserId: "erin", seq: 1, event: joined(1) }],
    });
    await drained(sentinel);
    expect(erin.valuesOf("deliverMessage")).toEqual([message(2)]);
    expect(erin.valuesOf("deliver")).toEqual([{ seq: 1, event: joined(1) }]);
  });

  it("subscribes before the first attach resolves when start() was not called, and counts the session from the start of attach", async () => {
    const { hub: started, publish, publisher } = await setup();
    const { hub, connection: hubConnection } = await started();
    // The server's confirmation of the subscription (the flush's pong) is held until released.
    const confirmation = deferred<void>();
    const flush = hubConnection.flush.bind(hubConnection);
    vi.spyOn(hubConnection, "flush").mockImplementation(async () => {
      await flush();
      await confirmation.promise;
    });
    const frank = new RecordingTarget();
    let attached = false;
    const attaching = hub.attach("frank", frank).then(() => {
      attached = true;
    });
    expect(hub.sessionCount("frank")).toBe(1);
    // A round trip of another connection: time for the hub's flush to come back, which is held.
    await publisher.flush();
    await publisher.flush();
    expect(attached).toBe(false);
    confirmation.resolve();
    await attaching;
    // Published from another connection right after attach: the server knew the subscription already.
    await publish({ messages: [{ recipientUserIds: ["frank"], message: message(1) }] });
    await frank.received(1);
    expect(frank.valuesOf("deliverMessage")).toEqual([message(1)]);
  });

  it("stops handing batches to a detached session; the user's other sessions and other users still get theirs", async () => {
    const { hub: started, publish, drained } = await setup();
    const { hub } = await started();
    const [first, second, gina, sentinel] = [new RecordingTarget(), new RecordingTarget(), new RecordingTarget(), new RecordingTarget()];
    await hub.attach("frank", first);
    await hub.attach("frank", second);
    await hub.attach("gina", gina);
    await hub.attach("sentinel", sentinel);
    hub.detach("frank", first);
    await publish({ messages: [{ recipientUserIds: ["frank", "gina"], message: message(1) }] });
    await drained(sentinel);
    expect(first.calls).toEqual([]);
    expect(second.valuesOf("deliverMessage")).toEqual([message(1)]);
    hub.detach("frank", second);
    expect(hub.sessionCount("frank")).toBe(0);
    expect(hub.userCount).toBe(2);
    await publish({
      messages: [{ recipientUserIds: ["frank", "gina"], message: message(2) }],
      events: [{ recipientUserId: "frank", seq: 1, event: joined(0) }],
    });
    await drained(sentinel);
    expect(second.calls).toHaveLength(1);
    expect(gina.valuesOf("deliverMessage")).toEqual([message(1), message(2)]);
  });

  it("counts and serves a user's sessions as they come and go, one, several, one again and none", async () => {
    const { hub: started, publish, drained } = await setup();
    const { hub } = await started();
    const [first, second, third, sentinel] = [new RecordingTarget(), new RecordingTarget(), new RecordingTarget(), new RecordingTarget()];
    await hub.attach("sentinel", sentinel);
    await hub.attach("hana", first);
    await hub.attach("hana", first);
    expect(hub.sessionCount("hana")).toBe(1);
    await hub.attach("hana", second);
    await hub.attach("hana", third);
    expect(hub.sessionCount("hana")).toBe(3);
    hub.detach("hana", first);
    hub.detach("hana", third);
    expect(hub.sessionCount("hana")).toBe(1);
    await publish({
      messages: [{ recipientUserIds: ["hana"], message: message(1) }],
      events: [{ recipientUserId: "hana", seq: 1, event: joined(0) }],
    });
    await drained(sentinel);
    expect(second.valuesOf("deliverMessage")).toEqual([message(1)]);
    expect(second.valuesOf("deliver")).toHaveLength(1);
    expect([...first.calls, ...third.calls]).toEqual([]);
    await hub.attach("hana", third);
    expect(hub.sessionCount("hana")).toBe(2);
    await publish({ messages: [{ recipientUserIds: ["hana"], message: message(2) }] });
    await drained(sentinel);
    expect(second.valuesOf("deliverMessage")).toEqual([message(1), message(2)]);
    expect(third.valuesOf("deliverMessage")).toEqual([message(2)]);
    hub.detach("hana", second);
    hub.detach("hana", third);
    hub.detach("hana", third);
    expect(hub.sessionCount("hana")).toBe(0);
    expect(hub.userCount).toBe(1);
  });

  it("unsubscribes at stop(): the server knows no interest in the deliveries subject any more", async () => {
    const { hub: started, publisher, subject } = await setup();
    const { hub, connection: hubConnection } = await started();
    await hub.start();
    hub.stop();
    await hubConnection.flush();
    const probe = await publisher
      .request(subject, JSON.stringify({ type: "delivery.batch", messages: [], events: [], typing: [] }), { timeout: 2000 })
      .then(
        () => "answered",
        (error: unknown) => (error instanceof Error && error.cause instanceof NoRespondersError ? "no responders" : String(error)),
      );
    expect(probe).toBe("no responders");
  });

  it("publishes a typing indicator as one batch naming every recipient, on the typing subject (not the workers' deliveries), which it hands to its own sessions of them too", async () => {
    const { hub: started, publisher, namespace } = await setup();
    const subject = typingSubject(namespace);
    const { hub, connection: hubConnection } = await started();
    await hub.start();
    const [aliceLaptop, bob] = [new RecordingTarget(), new RecordingTarget()];
    await hub.attach("alice", aliceLaptop);
    await hub.attach("bob", bob);
    const payloads: Uint8Array[] = [];
    const waiters = new Waiters();
    publisher.subscribe(subject, {
      callback: (error, received) => {
        if (error !== null) return;
        payloads.push(received.data);
        waiters.notify();
      },
    });
    await publisher.flush();
    // A group at its size limit: still one publish, and one that decodes.
    const recipientUserIds = ["alice", "bob", ...Array.from({ length: typingFanOutMax - 2 }, (_, index) => `member${index}`)];
    hub.publishTyping(recipientUserIds, indicator);
    // An empty batch after it, on the same connection: whatever publishTyping published came before it.
    hubConnection.publish(subject, JSON.stringify({ type: "delivery.batch", messages: [], events: [], typing: [] }));
    await waiters.until(() => payloads.length >= 2, "the typing batch and the empty batch after it");
    await bob.received(1);
    await aliceLaptop.received(1);
    expect(payloads).toHaveLength(2);
    const decoded = payloads.map((payload) => decodeMessage(deliveryBatch, payload));
    expect(decoded[0]).toEqual({
      ok: true,
      value: { type: "delivery.batch", messages: [], events: [], typing: [{ recipientUserIds, ...indicator }] },
    });
    expect(decoded[1]).toEqual({ ok: true, value: { type: "delivery.batch", messages: [], events: [], typing: [] } });
    // The hub forwards the typist's own devices too: the session leaves out the one that typed.
    expect(aliceLaptop.valuesOf("deliverTyping")).toEqual([indicator]);
    expect(bob.valuesOf("deliverTyping")).toEqual([indicator]);
  });

  it("drops a batch with messages or events on the typing subject, where any edge may publish, and still hands over typing there", async () => {
    const { hub: started, publisher, namespace, warnings } = await setup();
    const { hub } = await started();
    await hub.start();
    const bob = new RecordingTarget();
    await hub.attach("bob", bob);
    const forged: DeliveryBatch = {
      type: "delivery.batch",
      messages: [{ recipientUserIds: ["bob"], message: message(1) }],
      events: [{ recipientUserId: "bob", seq: Number.MAX_SAFE_INTEGER, event: joined(0) }],
      typing: [],
    };
    publisher.publish(typingSubject(namespace), JSON.stringify(forged));
    const typing: DeliveryBatch = {
      type: "delivery.batch",
      messages: [],
      events: [],
      typing: [{ recipientUserIds: ["bob"], ...indicator }],
    };
    publisher.publish(typingSubject(namespace), JSON.stringify(typing));
    await publisher.flush();
    await bob.received(1);
    expect(bob.calls.map((call) => call.method)).toEqual(["deliverTyping"]);
    expect(warnings).toEqual(["dropping a batch with messages or events on the typing subject"]);
  });
});

describe("NatsDeliveryHub trace ids with tracing off (docs/decisions/0037)", () => {
  it("names a message's trace id, derived from its send, in the line about a session that failed to take it, and delivers the batch's other messages", async () => {
    const { namespace, subject, publisher } = await setup();
    const hubConnection = await connection();
    const lines: { readonly line: string; readonly fields: LogFields | undefined }[] = [];
    const hub = new NatsDeliveryHub(hubConnection, namespace, (line, fields) => void lines.push({ line, fields }));
    hubs.push(hub);
    await hub.start();
    const broken: DeliveryTarget = {
      deliver: () => undefined,
      deliverTyping: () => undefined,
      deliverMessage: () => {
        throw new Error("a session bug");
      },
    };
    const carol = new RecordingTarget();
    await hub.attach("bob", broken);
    await hub.attach("carol", carol);
    const batch: DeliveryBatch = {
      type: "delivery.batch",
      messages: [
        { recipientUserIds: ["carol"], message: message(1) },
        { recipientUserIds: ["bob"], message: message(2) },
        { recipientUserIds: ["carol"], message: message(3) },
      ],
      events: [],
      typing: [],
    };
    // With tracing off a batch carries no trace context: the id is the one its edge and worker derive (0037).
    publisher.publish(subject, JSON.stringify(batch));
    await publisher.flush();
    await carol.received(2);
    expect(carol.valuesOf("deliverMessage")).toEqual([message(1), message(3)]);
    expect(lines).toEqual([{ line: expect.stringContaining("a session bug"), fields: { traceId: sendTraceId(message(2)) } }]);
  });
});
