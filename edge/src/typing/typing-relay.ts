// Serves a typing frame: checks that the typist is a member (ConversationMembers: cached, read-only), then
// publishes the indicator once with every member as a recipient (the typist included, for their other
// devices) on the deliveries subject, where every edge hands it to its sessions of those members.
// Ephemeral: nothing is stored, a lost publish is a lost indicator. The per-session rate limit is the
// session's.
import { typingFanOutMax, type BatchedTyping, type ConversationSummary, type ServerFrame, type TypingFrame } from "@cellwire/protocol";
import { notAMemberFrame } from "../error-mapping.ts";
import type { ConversationMembers } from "./conversation-members.ts";

/** A typing indicator without its recipients. */
export type TypingIndicator = Omit<BatchedTyping, "recipientUserIds">;

export interface TypingPublisher {
  /** Publishes the indicator to its recipients (at most typingFanOutMax). */
  publishTyping(recipientUserIds: readonly string[], indicator: TypingIndicator): void;
}

/** What a session needs from the typing feature. */
export interface TypingService {
  handle(typist: { readonly userId: string; readonly deviceId: string }, frame: TypingFrame): Promise<ServerFrame>;
  /** A conversation reply went through this edge: its member list is fresh. */
  conversationSeen(conversation: ConversationSummary): void;
}

export class TypingRelay implements TypingService {
  constructor(
    private readonly members: ConversationMembers,
    private readonly publisher: TypingPublisher,
    /** How long receivers show an indicator unless refreshed (EDGE_TYPING_EXPIRES_IN_MS). */
    private readonly expiresInMs: number,
  ) {}

  async handle(typist: { readonly userId: string; readonly deviceId: string }, frame: TypingFrame): Promise<ServerFrame> {
    const lookup = await this.members.lookup(frame.conversationId, typist.userId);
    if (lookup.kind === "not_a_member") return notAMemberFrame(frame.requestId);
    // Member lists decode with at most groupMembersMax entries, which is the fan-out limit.
    if (lookup.memberUserIds.length > typingFanOutMax)
      throw new Error(`a member list of ${lookup.memberUserIds.length} passed the decoders`);
    this.publisher.publishTyping(lookup.memberUserIds, {
      conversationId: frame.conversationId,
      userId: typist.userId,
      deviceId: typist.deviceId,
      expiresInMs: this.expiresInMs,
    });
    return { type: "typingAck", requestId: frame.requestId };
  }

  conversationSeen(conversation: ConversationSummary): void {
    this.members.remember(conversation);
  }
}
