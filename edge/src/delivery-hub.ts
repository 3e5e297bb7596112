// Reads every delivery batch of the deployment on one subject (docs/decisions/0011) and hands each item to
// this edge's sessions of its recipients: messages (each encoded once as a frame for all its local
// recipients), mailbox events, and typing indicators (published here too, by the typist's edge). The
// subscription is confirmed (flush) before the edge accepts sessions, and a session is registered before
// it reads its backlog, so every delivery of something committed after that read reaches it, and what
// was committed before is in the backlog (or both: sessions drop duplicates by seq).
import type { NatsConnection, Subscription } from "@nats-io/transport-node";
import { decodeMessage } from "@cellwire/cluster";
import {
  deliveriesSubject,
  deliveryBatch,
  type BatchedTyping,
  type Message,
  type SequencedEvent,
  type TypingIndicatorFrame,
} from "@cellwire/protocol";
import type { TypingIndicator, TypingPublisher } from "./typing/typing-relay.ts";

export interface DeliveryTarget {
  /** A live mailbox event; `serializedFrame` is its event frame, encoded once for every session. */
  deliver(event: SequencedEvent, serializedFrame: string): void;
  /** A live message of one of the user's conversations; `serializedFrame` is its message frame, encoded once. */
  deliverMessage(message: Message, serializedFrame: string): void;
  /** A typing indicator for the target's user; `serializedFrame` is its typing frame, encoded once. */
  deliverTyping(typing: TypingIndicator, serializedFrame: string): void;
}

export interface DeliverySource {
  /**
   * Registers `target` for the user's live deliveries. MUST count the target in sessionCount before its
   * first await (the per-user session limit relies on it); resolves once deliveries reach it.
   */
  attach(userId: string, target: DeliveryTarget): Promise<void>;
  detach(userId: string, target: DeliveryTarget): void;
  sessionCount(userId: string): number;
}

export class NatsDeliveryHub implements DeliverySource, TypingPublisher {
  private readonly users = new Map<string, Set<DeliveryTarget>>();
  private readonly subject: string;
  private subscription: Subscription | undefined;
  private subscribed: Promise<void> | undefined;

  constructor(
    private readonly connection: NatsConnection,
    namespace: string,
    private readonly warn: (message: string) => void,
  ) {
    this.subject = deliveriesSubject(namespace);
  }

  /** Subscribes to the deliveries; resolves once NATS has confirmed it. Call before accepting sessions. */
  start(): Promise<void> {
    this.subscribed ??= (async () => {
      this.subscription = this.connection.subscribe(this.subject, {
        callback: (error, received) => {
          if (error !== null) {
            this.warn(`the deliveries subscription failed: ${error.message}`);
            return;
          }
          this.dispatch(received.data);
        },
      });
      await this.connection.flush();
    })();
    return this.subscribed;
  }

  stop(): void {
    this.subscription?.unsubscribe();
  }

  get userCount(): number {
    return this.users.size;
  }

  sessionCount(userId: string): number {
    return this.users.get(userId)?.size ?? 0;
  }

  async attach(userId: string, target: DeliveryTarget): Promise<void> {
    let targets = this.users.get(userId);
    if (targets === undefined) {
      targets = new Set();
      this.users.set(userId, targets);
    }
    targets.add(target);
    await this.start();
  }

  detach(userId: string, target: DeliveryTarget): void {
    const targets = this.users.get(userId);
    if (targets === undefined) return;
    targets.delete(target);
    if (targets.size === 0) this.users.delete(userId);
  }

  publishTyping(recipientUserIds: readonly string[], indicator: TypingIndicator): void {
    const typing: BatchedTyping = { recipientUserIds: [...recipientUserIds], ...indicator };
    this.connection.publish(this.subject, JSON.stringify({ type: "delivery.batch", messages: [], events: [], typing: [typing] }));
  }

  private dispatch(data: Uint8Array): void {
    const decoded = decodeMessage(deliveryBatch, data);
    if (!decoded.ok) {
      this.warn(`dropping a delivery batch that does not decode: ${decoded.reason}`);
      return;
    }
    const { messages, events, typing } = decoded.value;
    for (const { recipientUserIds, message } of messages) {
      // Encoded once, and only if a recipient has a session here.
      let frame: string | undefined;
      for (const recipientUserId of recipientUserIds) {
        const targets = this.users.get(recipientUserId);
        if (targets === undefined) continue;
        frame ??= JSON.stringify({ type: "message", message });
        for (const target of targets) target.deliverMessage(message, frame);
      }
    }
    for (const { recipientUserId, seq, event } of events) {
      const targets = this.users.get(recipientUserId);
      if (targets === undefined) continue;
      const frame = JSON.stringify({ type: "event", seq, event });
      for (const target of targets) target.deliver({ seq, event }, frame);
    }
    for (const { recipientUserIds, ...indicator } of typing) {
      let frame: string | undefined;
      for (const recipientUserId of recipientUserIds) {
        const targets = this.users.get(recipientUserId);
        if (targets === undefined) continue;
        const indicatorFrame: TypingIndicatorFrame = { type: "typing", ...indicator };
        frame ??= JSON.stringify(indicatorFrame);
        for (const target of targets) target.deliverTyping(indicator, frame);
      }
    }
  }
}
