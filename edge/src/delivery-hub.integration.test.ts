// NatsDeliveryHub against the real NATS: each kind of delivery on a user's subject reaches every session
// of that user through its own DeliveryTarget method with its frame already encoded (delivery.message to
// deliverMessage, delivery.event to deliver, delivery.typing to deliverTyping), deliveries for someone else
// or that do not decode are dropped with a warning, and the last detach unsubscribes.
import { randomBytes } from "node:crypto";
import { afterAll, describe, expect, it } from "vitest";
import { connect, NoRespondersError, type NatsConnection } from "@nats-io/transport-node";
import { encodeJson } from "@cellwire/cluster";
import {
  decodeServerFrame,
  deliverySubject,
  type DeliveryMessage,
  type Message,
  type SequencedEvent,
  type TypingDelivery,
} from "@cellwire/protocol";
import { NatsDeliveryHub, type DeliveryTarget } from "./delivery-hub.ts";
import { Waiters } from "./testing/edge-fakes.ts";

const namespace = `tdel${Date.now().toString(36)}${randomBytes(3).toString("hex")}`.slice(0, 24);
const conversationId = "g-AAAAAAAAAAAAAAAAAAAAAA";
const connections: NatsConnection[] = [];

afterAll(async () => {
  await Promise.all(connections.map((connection) => connection.close().catch(() => undefined)));
});

async function connection(): Promise<NatsConnection> {
  const opened = await connect({ servers: ["127.0.0.1:4222"] });
  connections.push(opened);
  return opened;
}

/** A session as the hub sees it: records each call with the frame text it was given. */
class RecordingTarget implements DeliveryTarget {
  readonly calls: { readonly method: "deliver" | "deliverMessage" | "deliverTyping"; readonly value: unknown; readonly frame: string }[] = [];
  private readonly waiters = new Waiters();

  deliver(event: SequencedEvent, serializedFrame: string): void {
    this.record("deliver", event, serializedFrame);
  }

  deliverMessage(message: Message, serializedFrame: string): void {
    this.record("deliverMessage", message, serializedFrame);
  }

  deliverTyping(typing: TypingDelivery, serializedFrame: string): void {
    this.record("deliverTyping", typing, serializedFrame);
  }

  received(count: number): Promise<void> {
    return this.waiters.until(() => this.calls.length >= count, `${count} deliveries; got ${JSON.stringify(this.calls)}`);
  }

  private record(method: "deliver" | "deliverMessage" | "deliverTyping", value: unknown, frame: string): void {
    this.calls.push({ method, value, frame });
    this.waiters.notify();
  }
}

function message(seq: number): Message {
  return { conversationId, messageId: `m-${seq}`, seq, senderUserId: "alice", senderDeviceId: "phone", clientMessageId: `c-${seq}`, body: `message ${seq}`, sentAtMs: 1_700_000_000_000 };
}

describe("NatsDeliveryHub", () => {
  it("hands messages, mailbox events and typing to every session of the user, each with its frame, and nothing to other users", async () => {
    const hubConnection = await connection();
    const publisher = await connection();
    const warnings: string[] = [];
    const hub = new NatsDeliveryHub(hubConnection, namespace, (warning) => warnings.push(warning));
    const [phone, laptop, other] = [new RecordingTarget(), new RecordingTarget(), new RecordingTarget()];
    await hub.attach("bob", phone);
    await hub.attach("bob", laptop);
    await hub.attach("carol", other);
    expect(hub.userCount).toBe(2);
    expect(hub.sessionCount("bob")).toBe(2);

    const event: SequencedEvent = { seq: 4, event: { kind: "joined", conversationId, conversationKind: "group", title: "team", afterSeq: 6, addedByUserId: "alice" } };
    const typing: TypingDelivery = { type: "delivery.typing", recipientUserId: "bob", conversationId, userId: "alice", deviceId: "phone", expiresInMs: 5000 };
    const deliveries: DeliveryMessage[] = [
      { type: "delivery.message", recipientUserId: "bob", message: message(7) },
      { type: "delivery.event", recipientUserId: "bob", ...event },
      typing,
    ];
    for (const delivery of deliveries) publisher.publish(deliverySubject(namespace, "bob"), encodeJson(delivery));
    await publisher.flush();
    await phone.received(3);
    await laptop.received(3);

    for (const target of [phone, laptop]) {
      expect(target.calls.map((call) => [call.method, call.value])).toEqual([
        ["deliverMessage", message(7)],
        ["deliver", event],
        ["deliverTyping", typing],
      ]);
      // Each frame is the server frame the session writes as it is, valid for a client's decoder.
      expect(target.calls.map((call) => decodeServerFrame(call.frame))).toEqual([
        { ok: true, value: { type: "message", message: message(7) } },
        { ok: true, value: { type: "event", ...event } },
        { ok: true, value: { type: "typing", conversationId, userId: "alice", deviceId: "phone", expiresInMs: 5000 } },
      ]);
    }
    expect(phone.calls.map((call) => call.frame)).toEqual(laptop.calls.map((call) => call.frame));
    expect(other.calls).toEqual([]);
    expect(warnings).toEqual([]);
  });

  it("drops a delivery for another user and one that does not decode, with a warning, and goes on delivering", async () => {
    const hubConnection = await connection();
    const publisher = await connection();
    const warnings: string[] = [];
    const hub = new NatsDeliveryHub(hubConnection, namespace, (warning) => warnings.push(warning));
    const target = new RecordingTarget();
    await hub.attach("dave", target);
    const subject = deliverySubject(namespace, "dave");
    publisher.publish(subject, encodeJson({ type: "delivery.message", recipientUserId: "erin", message: message(1) }));
    publisher.publish(subject, encodeJson({ type: "delivery.message", recipientUserId: "dave", message: { ...message(2), seq: 0 } }));
    publisher.publish(subject, new TextEncoder().encode("not json"));
    publisher.publish(subject, encodeJson({ type: "delivery.message", recipientUserId: "dave", message: message(3) }));
    await publisher.flush();
    await target.received(1);
    expect(target.calls.map((call) => call.value)).toEqual([message(3)]);
    expect(warnings).toHaveLength(3);
    expect(warnings[0]).toContain("erin");
  });

  it("unsubscribes when the last session of a user detaches: later deliveries reach no one", async () => {
    const hubConnection = await connection();
    const publisher = await connection();
    const hub = new NatsDeliveryHub(hubConnection, namespace, () => undefined);
    const [first, second] = [new RecordingTarget(), new RecordingTarget()];
    await hub.attach("frank", first);
    await hub.attach("frank", second);
    hub.detach("frank", first);
    const subject = deliverySubject(namespace, "frank");
    publisher.publish(subject, encodeJson({ type: "delivery.message", recipientUserId: "frank", message: message(1) }));
    await publisher.flush();
    await second.received(1);
    expect(first.calls).toEqual([]);
    hub.detach("frank", second);
    expect(hub.userCount).toBe(0);
    expect(hub.sessionCount("frank")).toBe(0);
    // The server no longer knows any interest in the subject: a request to it has no responders at once.
    await hubConnection.flush();
    const probe = await publisher.request(subject, encodeJson({ type: "delivery.message", recipientUserId: "frank", message: message(2) }), { timeout: 5000 }).then(
      () => "answered",
      (error: unknown) => (error instanceof Error && error.cause instanceof NoRespondersError ? "no responders" : String(error)),
    );
    expect(probe).toBe("no responders");
    expect(second.calls).toHaveLength(1);
  });
});
