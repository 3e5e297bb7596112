// Reads every delivery batch of the deployment on one subject (docs/decisions/0011) and hands each item to
// this edge's sessions of its recipients: messages (each encoded once as a frame for all its local
// recipients), mailbox events, and typing indicators. Only workers may publish deliveries (NATS
// permissions, docs/decisions/0015); typing indicators come from edges, on a subject of their own, where
// a batch carrying messages or events is dropped: an edge's credentials cannot forge a delivery. The
// subscription is confirmed (flush) before the edge accepts sessions, and a session is registered before
// it reads its backlog, so every delivery of something committed after that read reaches it, and what
// was committed before is in the backlog (or both: sessions drop duplicates by seq).
import type { Msg, MsgHdrs, NatsConnection, Subscription } from "@nats-io/transport-node";
import { activeTracing, decodeMessage, sendTraceId, type LogFields, type TraceContext, type Tracing } from "@cellwire/cluster";
import {
  deliveriesSubject,
  deliveryBatch,
  typingSubject,
  type BatchedTyping,
  type Message,
  type SequencedEvent,
  type TypingIndicatorFrame,
} from "@cellwire/protocol";
import type { TypingIndicator, TypingPublisher } from "./typing/typing-relay.ts";

export interface DeliveryTarget {
  /** A live mailbox event; `serializedFrame` is its event frame, encoded once for every session. */
  deliver(event: SequencedEvent, serializedFrame: string): void;
  /**
   * A live message of one of the user's conversations; `serializedFrame` is its message frame, encoded
   * once; `recipientCount` the members it was published to (the sender's session charges its fan-out).
   */
  deliverMessage(message: Message, serializedFrame: string, recipientCount: number): void;
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

/**
 * The sessions of one user on this edge: the session itself while there is one (nearly always), a Set
 * from the second on. A Set per user would cost every idle session about 165 bytes.
 */
type UserTargets = DeliveryTarget | Set<DeliveryTarget>;

/** The targets as an iterable (a one-item array for a single one: off the message path, which branches). */
function targetsOf(targets: UserTargets): Iterable<DeliveryTarget> {
  return targets instanceof Set ? targets : [targets];
}

export class NatsDeliveryHub implements DeliverySource, TypingPublisher {
  private readonly users = new Map<string, UserTargets>();
  private readonly subject: string;
  private readonly typingSubject: string;
  private subscription: Subscription | undefined;
  private typingSubscription: Subscription | undefined;
  private subscribed: Promise<void> | undefined;

  constructor(
    private readonly connection: NatsConnection,
    namespace: string,
    private readonly warn: (message: string, fields?: LogFields) => void,
  ) {
    this.subject = deliveriesSubject(namespace);
    this.typingSubject = typingSubject(namespace);
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
          // The message, not its headers: nats decodes them when first read, about a microsecond a batch,
          // which only a delivery here with tracing on, or a line about an item, needs (0037).
          this.dispatch(received.data, "deliveries", received);
        },
      });
      this.typingSubscription = this.connection.subscribe(this.typingSubject, {
        callback: (error, received) => {
          if (error !== null) {
            this.warn(`the typing subscription failed: ${error.message}`);
            return;
          }
          this.dispatch(received.data, "typing");
        },
      });
      await this.connection.flush();
    })();
    return this.subscribed;
  }

  stop(): void {
    this.subscription?.unsubscribe();
    this.typingSubscription?.unsubscribe();
  }

  get userCount(): number {
    return this.users.size;
  }

  sessionCount(userId: string): number {
    const targets = this.users.get(userId);
    if (targets === undefined) return 0;
    return targets instanceof Set ? targets.size : 1;
  }

  async attach(userId: string, target: DeliveryTarget): Promise<void> {
    const targets = this.users.get(userId);
    if (targets === undefined) this.users.set(userId, target);
    else if (targets instanceof Set) targets.add(target);
    else if (targets !== target) this.users.set(userId, new Set([targets, target]));
    await this.start();
  }

  detach(userId: string, target: DeliveryTarget): void {
    const targets = this.users.get(userId);
    if (targets === undefined) return;
    if (!(targets instanceof Set)) {
      if (targets === target) this.users.delete(userId);
      return;
    }
    targets.delete(target);
    if (targets.size === 0) this.users.delete(userId);
    else if (targets.size === 1) for (const remaining of targets) this.users.set(userId, remaining);
  }

  publishTyping(recipientUserIds: readonly string[], indicator: TypingIndicator): void {
    const typing: BatchedTyping = { recipientUserIds: [...recipientUserIds], ...indicator };
    this.connection.publish(this.typingSubject, JSON.stringify({ type: "delivery.batch", messages: [], events: [], typing: [typing] }));
  }

  private dispatch(data: Uint8Array, source: "deliveries" | "typing", received?: Msg): void {
    const tracing = activeTracing();
    const startedAtMs = tracing === undefined ? 0 : tracing.now();
    const decoded = decodeMessage(deliveryBatch, data);
    if (!decoded.ok) {
      this.warn(`dropping a delivery batch that does not decode: ${decoded.reason}`);
      return;
    }
    const { messages, events, typing } = decoded.value;
    // Any edge may publish typing; messages and events (whose seq advances a session's cursor) come only
    // from workers, on the deliveries subject.
    if (source === "typing" && (messages.length > 0 || events.length > 0)) {
      this.warn("dropping a batch with messages or events on the typing subject");
      return;
    }
    // When tracing is on, each message's context (the worker's span of its send) came in the headers; the
    // batch's delivery here is one span linked to each message delivered to a session of this edge (read
    // only for those: every edge receives every batch).
    const delivered: TraceContext[] | undefined = tracing === undefined ? undefined : [];
    let messageIndex = -1;
    for (const { recipientUserIds, message } of messages) {
      messageIndex++;
      // Encoded once, and only if a recipient has a session here.
      let frame: string | undefined;
      try {
        for (const recipientUserId of recipientUserIds) {
          const targets = this.users.get(recipientUserId);
          if (targets === undefined) continue;
          frame ??= JSON.stringify({ type: "message", message });
          if (!(targets instanceof Set)) targets.deliverMessage(message, frame, recipientUserIds.length);
          else for (const target of targets) target.deliverMessage(message, frame, recipientUserIds.length);
        }
      } catch (error) {
        // A session that throws (a bug) costs this message's other recipients here, not the batch's other
        // messages; the line names the message's send by its trace id (docs/decisions/0037).
        const why = error instanceof Error ? error.message : String(error);
        this.warn(
          `handing message ${message.messageId} of ${message.conversationId} to a session failed: ${why}`,
          itemTraceFields(tracing, received?.headers, messageIndex, message),
        );
      }
      if (frame !== undefined && tracing !== undefined) {
        const traceContext = tracing.extractItem(received?.headers, messageIndex);
        if (traceContext !== undefined) delivered?.push(traceContext);
      }
    }
    if (tracing !== undefined && delivered !== undefined && delivered.length > 0)
      tracing.recordSpan("edge.deliver", { "cellwire.delivery.messages": delivered.length }, startedAtMs, delivered);
    for (const { recipientUserId, seq, event } of events) {
      const targets = this.users.get(recipientUserId);
      if (targets === undefined) continue;
      const frame = JSON.stringify({ type: "event", seq, event });
      for (const target of targetsOf(targets)) target.deliver({ seq, event }, frame);
    }
    for (const { recipientUserIds, ...indicator } of typing) {
      let frame: string | undefined;
      for (const recipientUserId of recipientUserIds) {
        const targets = this.users.get(recipientUserId);
        if (targets === undefined) continue;
        const indicatorFrame: TypingIndicatorFrame = { type: "typing", ...indicator };
        frame ??= JSON.stringify(indicatorFrame);
        for (const target of targetsOf(targets)) target.deliverTyping(indicator, frame);
      }
    }
  }
}

/**
 * `{ traceId }` of a delivery batch's message `index`, read only when a line is written: with tracing on its
 * span context's (from the batch's headers), else the id derived from the message's send (sendTraceId,
 * docs/decisions/0037), the one its edge and its worker name.
 */
function itemTraceFields(
  tracing: Tracing | undefined,
  headers: MsgHdrs | undefined,
  index: number,
  message: Message,
): LogFields | undefined {
  const traceId = tracing === undefined ? sendTraceId(message) : tracing.extractItem(headers, index)?.traceId;
  return traceId === undefined ? undefined : { traceId };
}
