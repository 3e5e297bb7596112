// Holds one NATS subscription per user with at least one session on this edge, and hands each live
// mailbox event to every session of that user. Subscribing completes (flush) before a session reads its
// backlog, so an event is either in the backlog or arrives live (or both: sessions drop duplicates by seq).
// Typing indicators travel the same subjects (delivery.typing), published here by the typist's edge.
import type { NatsConnection, Subscription } from "@nats-io/transport-node";
import { decodeMessage, encodeJson } from "@cellwire/cluster";
import { deliveryMessage, deliverySubject, type Message, type SequencedEvent, type TypingDelivery, type TypingIndicatorFrame } from "@cellwire/protocol";
import type { TypingIndicator, TypingPublisher } from "./typing/typing-relay.ts";

export interface DeliveryTarget {
  /** A live mailbox event; `serializedFrame` is its event frame, encoded once for every session. */
  deliver(event: SequencedEvent, serializedFrame: string): void;
  /** A live message of one of the user's conversations; `serializedFrame` is its message frame, encoded once. */
  deliverMessage(message: Message, serializedFrame: string): void;
  /** A typing indicator for the target's user; `serializedFrame` is its typing frame, encoded once. */
  deliverTyping(typing: TypingDelivery, serializedFrame: string): void;
}

export interface DeliverySource {
  /**
   * Subscribes `target` to the user's live events. MUST count the target in sessionCount before its first
   * await (the per-user session limit relies on it), and keeps it counted if the subscription fails:
   * the caller detaches it.
   */
  attach(userId: string, target: DeliveryTarget): Promise<void>;
  detach(userId: string, target: DeliveryTarget): void;
  sessionCount(userId: string): number;
}

type UserEntry = { readonly targets: Set<DeliveryTarget>; readonly subscription: Subscription; readonly subscribed: Promise<void> };

export class NatsDeliveryHub implements DeliverySource, TypingPublisher {
  private readonly users = new Map<string, UserEntry>();

  constructor(
    private readonly connection: NatsConnection,
    private readonly namespace: string,
    private readonly warn: (message: string) => void,
  ) {}

  get userCount(): number {
    return this.users.size;
  }

  sessionCount(userId: string): number {
    return this.users.get(userId)?.targets.size ?? 0;
  }

  async attach(userId: string, target: DeliveryTarget): Promise<void> {
    let entry = this.users.get(userId);
    if (entry === undefined) {
      const subscription = this.connection.subscribe(deliverySubject(this.namespace, userId), {
        callback: (error, received) => {
          if (error !== null) {
            this.warn(`delivery subscription of ${userId} failed: ${error.message}`);
            return;
          }
          this.dispatch(userId, received.data);
        },
      });
      entry = { targets: new Set(), subscription, subscribed: this.connection.flush() };
      this.users.set(userId, entry);
    }
    entry.targets.add(target);
    await entry.subscribed;
  }

  detach(userId: string, target: DeliveryTarget): void {
    const entry = this.users.get(userId);
    if (entry === undefined) return;
    entry.targets.delete(target);
    if (entry.targets.size === 0) {
      entry.subscription.unsubscribe();
      this.users.delete(userId);
    }
  }

  publishTyping(recipientUserIds: readonly string[], indicator: TypingIndicator): void {
    for (const recipientUserId of recipientUserIds) {
      const typing: TypingDelivery = { type: "delivery.typing", recipientUserId, ...indicator };
      this.connection.publish(deliverySubject(this.namespace, recipientUserId), encodeJson(typing));
    }
  }

  private dispatch(userId: string, data: Uint8Array): void {
    const entry = this.users.get(userId);
    if (entry === undefined) return;
    const decoded = decodeMessage(deliveryMessage, data);
    if (!decoded.ok) {
      this.warn(`dropping undecodable delivery for ${userId}: ${decoded.reason}`);
      return;
    }
    if (decoded.value.recipientUserId !== userId) {
      this.warn(`dropping delivery for ${decoded.value.recipientUserId} received on ${userId}'s subject`);
      return;
    }
    if (decoded.value.type === "delivery.typing") {
      const typing = decoded.value;
      const indicator: TypingIndicatorFrame = {
        type: "typing",
        conversationId: typing.conversationId,
        userId: typing.userId,
        deviceId: typing.deviceId,
        expiresInMs: typing.expiresInMs,
      };
      const frame = JSON.stringify(indicator);
      for (const target of entry.targets) target.deliverTyping(typing, frame);
      return;
    }
    if (decoded.value.type === "delivery.message") {
      const { message } = decoded.value;
      const frame = JSON.stringify({ type: "message", message });
      for (const target of entry.targets) target.deliverMessage(message, frame);
      return;
    }
    const { seq, event } = decoded.value;
    const frame = JSON.stringify({ type: "event", seq, event });
    for (const target of entry.targets) target.deliver({ seq, event }, frame);
  }
}
