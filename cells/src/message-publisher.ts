// Publishes each stored message to its conversation's members, on each member's delivery subject, in the
// order it is given (seq order per conversation: the committer hands batches over in commit order). The
// member list of a conversation is cached with its version; a message stored under a newer version than
// the cached one (members were added meanwhile, here or by a previous owner) reloads it first. The message
// is encoded once; each member's payload only prefixes its recipient.
//
// Publishes are NATS core: at most once. A member's device that misses one sees the gap at its next
// message (or on reconnect) and reads the conversation's log (docs/decisions/0009).
import type { Logger } from "@cellwire/cluster";
import type { Message } from "@cellwire/protocol";
import { BoundedCache } from "./bounded-cache.ts";
import type { MembersResult } from "./store/store.ts";

/** A message just stored, with the member version its seq was given under (AppendMessageResult). */
export type StoredMessage = { readonly message: Message; readonly membersVersion: number };

export type MessagePublisherDependencies = {
  readonly members: (conversationId: string) => Promise<MembersResult>;
  /** The delivery subject of a user (protocol's deliverySubject for this namespace). */
  readonly subjectOf: (userId: string) => string;
  readonly publish: (subject: string, payload: string) => void;
  readonly logger: Logger;
  /** Conversations whose members are cached. */
  readonly conversationsMax: number;
};

type Recipients = { readonly membersVersion: number; readonly recipients: readonly { readonly subject: string; readonly payloadPrefix: string }[] };

export class MessagePublisher {
  private readonly cache: BoundedCache<Recipients>;

  constructor(private readonly dependencies: MessagePublisherDependencies) {
    this.cache = new BoundedCache(dependencies.conversationsMax);
  }

  async publish(messages: readonly StoredMessage[]): Promise<void> {
    const { publish } = this.dependencies;
    for (const { message, membersVersion } of messages) {
      const recipients = await this.recipientsOf(message.conversationId, membersVersion);
      if (recipients === undefined) continue;
      const suffix = `${JSON.stringify(message)}}`;
      for (const recipient of recipients.recipients) publish(recipient.subject, recipient.payloadPrefix + suffix);
    }
  }

  /** The conversation's members were changed by this worker: the next message reloads them. */
  forget(conversationId: string): void {
    this.cache.delete(conversationId);
  }

  private async recipientsOf(conversationId: string, membersVersion: number): Promise<Recipients | undefined> {
    const cached = this.cache.get(conversationId);
    if (cached !== undefined && cached.membersVersion >= membersVersion) return cached;
    const result = await this.dependencies.members(conversationId);
    if (result.outcome !== "members") {
      // The conversation moved away, or is moving, since the message was stored: its devices read the log.
      this.dependencies.logger.warn(`the members of ${conversationId} could not be read (${result.outcome}); its new messages were not published`);
      return undefined;
    }
    const recipients: Recipients = {
      membersVersion: result.membersVersion,
      recipients: result.memberUserIds.map((userId) => ({
        subject: this.dependencies.subjectOf(userId),
        // User ids passed the protocol's allowlist ([A-Za-z0-9_-]): nothing in them needs escaping.
        payloadPrefix: `{"type":"delivery.message","recipientUserId":"${userId}","message":`,
      })),
    };
    this.cache.set(conversationId, recipients);
    return recipients;
  }
}
