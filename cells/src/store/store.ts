// The contract of a cell's conversation storage. Two implementations: Postgres (production) and memory
// (unit tests of the request handler); one contract suite (store-contract.ts) runs against both.
import type { ConversationSummary, Message } from "@cellwire/protocol";

/** Expected refusals, returned as values because the caller branches on them (never thrown). */
export type StoreRefusal = "not_a_member" | "not_a_group" | "too_many_members" | "invalid_peer";

export type AppendMessageInput = {
  readonly conversationId: string;
  readonly senderUserId: string;
  readonly senderDeviceId: string;
  readonly clientMessageId: string;
  readonly body: string;
};

/**
 * `deduplicated` is true when (conversation, sender, clientMessageId) was stored before: the stored
 * message comes back unchanged (same messageId, seq and body) and nothing new is written.
 */
export type AppendMessageResult =
  | { readonly outcome: "stored"; readonly message: Message; readonly deduplicated: boolean }
  | { readonly outcome: "not_a_member" };

export type ConversationResult<Refusal extends StoreRefusal> =
  | { readonly outcome: "conversation"; readonly conversation: ConversationSummary }
  | { readonly outcome: Refusal };

export type OpenDirectInput = { readonly conversationId: string; readonly userId: string; readonly peerUserId: string };
export type CreateGroupInput = {
  readonly conversationId: string;
  readonly creatorUserId: string;
  readonly title: string;
  readonly memberUserIds: readonly string[];
};
export type AddMembersInput = { readonly conversationId: string; readonly userId: string; readonly userIds: readonly string[] };
export type HistoryInput = {
  readonly conversationId: string;
  readonly userId: string;
  /** Only messages with seq below this; null for the newest. */
  readonly beforeSeq: number | null;
  readonly limit: number;
};
export type HistoryResult =
  | { readonly outcome: "history"; readonly messages: Message[]; readonly hasMore: boolean }
  | { readonly outcome: "not_a_member" };

export type StoreLimits = {
  /** Members of one group, creator included; at most the protocol's groupMembersMax. */
  readonly groupMembersMax: number;
};

export interface ConversationStore {
  /**
   * Appends a message with the next seq of its conversation, or returns the message already stored for
   * (conversation, sender, clientMessageId). MUST be atomic per conversation: concurrent callers, even on
   * different workers, never produce a gap or a repeated seq. A conversation that does not exist answers
   * not_a_member, so a non-member learns nothing about it.
   */
  appendMessage(input: AppendMessageInput): Promise<AppendMessageResult>;

  /**
   * Finds or creates the direct conversation `conversationId` between the two users (idempotent). When the
   * conversation exists and `userId` is not one of its members, answers not_a_member.
   */
  openDirect(input: OpenDirectInput): Promise<ConversationResult<"not_a_member" | "invalid_peer">>;

  /**
   * Creates a group of creator ∪ memberUserIds. A retry with the same id returns the group as it is
   * (idempotent); an id taken by a conversation the creator is not in answers not_a_member.
   */
  createGroup(input: CreateGroupInput): Promise<ConversationResult<"not_a_member" | "too_many_members">>;

  /** Adds users to a group `userId` belongs to; users already in it are ignored. */
  addMembers(input: AddMembersInput): Promise<ConversationResult<"not_a_member" | "not_a_group" | "too_many_members">>;

  /** The newest `limit` messages with seq < beforeSeq, oldest first; `hasMore` says older ones exist. */
  history(input: HistoryInput): Promise<HistoryResult>;

  /** The conversation's members, sorted; empty when it does not exist. */
  members(conversationId: string): Promise<string[]>;
}
