// Publishes the messages of one commit batch to every edge at once: one delivery.batch on the deliveries
// subject (docs/decisions/0011), each message once with its conversation's members as recipients, in the
// order given (seq order per conversation: the committer hands batches over in commit order), split only
// past the batch bounds. The member list of a conversation is cached with its version, and its JSON with
// it; a message stored under a newer version than the cached one (members were added meanwhile, here or by
// a previous owner) reloads it first.
//
// Publishes are NATS core: at most once. A member's device that misses one sees the gap at its next
// message (or on reconnect) and reads the conversation's log (docs/decisions/0009).
import type { MsgHdrs } from "@nats-io/transport-node";
import { activeTracing, BoundedCache, type Logger, type TraceContext } from "@cellwire/cluster";
import { deliveryBatchItemsMax, sendBatchBytesMax, type Delivery, type Message } from "@cellwire/protocol";
import type { MembersResult } from "./store/store.ts";

/** A message just stored, with the member version its seq was given under (AppendMessageResult). */
export type StoredMessage = {
  readonly message: Message;
  readonly membersVersion: number;
  /** The span of the message's send on this worker, when tracing is on: carried to the recipients' edges. */
  readonly trace?: TraceContext | undefined;
};

export type MessagePublisherDependencies = {
  readonly members: (conversationId: string) => Promise<MembersResult>;
  /**
   * Publishes one encoded delivery.batch on the deliveries subject; `headers` carry each message's trace
   * context in message order with tracing on (with it off, recipients derive a send's id, 0037).
   */
  readonly publish: (payload: string, headers?: MsgHdrs) => void;
  readonly logger: Logger;
  /** Conversations whose members are cached. */
  readonly conversationsMax: number;
};

type Recipients = { readonly membersVersion: number; readonly json: string };

const batchHead = '{"type":"delivery.batch","messages":[';
const batchTail = '],"events":[],"typing":[]}';

export class MessagePublisher {
  private readonly cache: BoundedCache<Recipients>;

  constructor(private readonly dependencies: MessagePublisherDependencies) {
    this.cache = new BoundedCache(dependencies.conversationsMax);
  }

  /**
   * Publishes the messages of one commit batch. When every message's members are cached (the common
   * case) it publishes at once and returns undefined, so the delivery batch leaves in the same NATS
   * write as the replies the committer has just sent (the client flushes once per microtask); otherwise
   * it reads the missing members first and returns the promise of the publish.
   */
  publish(messages: readonly StoredMessage[]): Promise<void> | undefined {
    const cached: Recipients[] = [];
    for (const { message, membersVersion } of messages) {
      const recipients = this.cachedRecipientsOf(message.conversationId, membersVersion);
      if (recipients === undefined) return this.readMembersAndPublish(messages);
      cached.push(recipients);
    }
    this.publishWith(messages, cached);
    return undefined;
  }

  private async readMembersAndPublish(messages: readonly StoredMessage[]): Promise<void> {
    const recipientsOfEach: (Recipients | undefined)[] = [];
    for (const { message, membersVersion } of messages)
      recipientsOfEach.push(await this.recipientsOf(message.conversationId, membersVersion));
    this.publishWith(messages, recipientsOfEach);
  }

  /** One delivery.batch per bounds' worth of messages; a message without recipients (moved away) is left out. */
  private publishWith(messages: readonly StoredMessage[], recipientsOfEach: readonly (Recipients | undefined)[]): void {
    const items: string[] = [];
    let bytes = batchHead.length + batchTail.length;
    // With tracing on: the trace context of each item of the batch being built, and one span for the
    // whole publish, linked to every message's send (docs/decisions/0034).
    const tracing = activeTracing();
    const traces: (TraceContext | undefined)[] | undefined = tracing === undefined ? undefined : [];
    const startedAtMs = tracing === undefined ? 0 : tracing.now();
    const publishItems = (): void => {
      const payload = batchHead + items.join(",") + batchTail;
      if (tracing === undefined || traces === undefined) this.dependencies.publish(payload);
      else this.dependencies.publish(payload, tracing.headersForEach(traces));
      items.length = 0;
      if (traces !== undefined) traces.length = 0;
    };
    messages.forEach(({ message, trace }, index) => {
      const recipients = recipientsOfEach[index];
      if (recipients === undefined) return;
      const item = `{"recipientUserIds":${recipients.json},"message":${JSON.stringify(message)}}`;
      // Bytes counted as UTF-8, the way NATS counts its payload limit.
      const itemBytes = Buffer.byteLength(item, "utf8") + 1;
      if (items.length > 0 && (items.length >= deliveryBatchItemsMax || bytes + itemBytes > sendBatchBytesMax)) {
        publishItems();
        bytes = batchHead.length + batchTail.length;
      }
      items.push(item);
      traces?.push(trace);
      bytes += itemBytes;
    });
    if (items.length > 0) publishItems();
    if (tracing !== undefined) {
      const links: TraceContext[] = [];
      for (const { trace } of messages) if (trace !== undefined) links.push(trace);
      if (links.length > 0)
        tracing.recordSpan("worker.publish_deliveries", { "cellwire.batch.messages": messages.length }, startedAtMs, links);
    }
  }

  /** The conversation's members were changed by this worker: the next message reloads them. */
  forget(conversationId: string): void {
    this.cache.delete(conversationId);
  }

  /** The cached members of the conversation, if they are at least of the message's members version. */
  private cachedRecipientsOf(conversationId: string, membersVersion: number): Recipients | undefined {
    const cached = this.cache.get(conversationId);
    return cached !== undefined && cached.membersVersion >= membersVersion ? cached : undefined;
  }

  private async recipientsOf(conversationId: string, membersVersion: number): Promise<Recipients | undefined> {
    const cached = this.cachedRecipientsOf(conversationId, membersVersion);
    if (cached !== undefined) return cached;
    const result = await this.dependencies.members(conversationId);
    if (result.outcome !== "members") {
      // The conversation moved away, or is moving, since the message was stored: its devices read the log.
      this.dependencies.logger.warn(
        `the members of ${conversationId} could not be read (${result.outcome}); its new messages were not published`,
      );
      return undefined;
    }
    // User ids passed the protocol's allowlist ([A-Za-z0-9_-]): their JSON is the ids in quotes.
    const recipients: Recipients = { membersVersion: result.membersVersion, json: JSON.stringify(result.memberUserIds) };
    this.cache.set(conversationId, recipients);
    return recipients;
  }
}

/** One mailbox event as a delivery.batch, as the owner of the user's mailbox publishes it after the append. */
export function eventBatch(delivery: Delivery): string {
  const { recipientUserId, seq, event } = delivery;
  return JSON.stringify({ type: "delivery.batch", messages: [], events: [{ recipientUserId, seq, event }], typing: [] });
}
