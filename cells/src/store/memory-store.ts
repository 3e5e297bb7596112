// An in-memory ConversationStore for unit tests: the same contract as the Postgres store (the contract
// suite checks both), without durability. Every method completes its changes before its first await, so
// JavaScript's single thread gives the per-conversation atomicity the contract asks for.
import { trimToPageBudget } from "./page-budget.ts";
import { randomUUID } from "node:crypto";
import { groupMembersMax, type ConversationKind, type ConversationSummary, type Message } from "@cellwire/protocol";
import type {
  AddMembersInput,
  AppendMessageInput,
  AppendMessageResult,
  ConversationResult,
  ConversationStore,
  CreateGroupInput,
  HistoryInput,
  HistoryResult,
  OpenDirectInput,
  StoreLimits,
} from "./store.ts";

type StoredConversation = {
  readonly id: string;
  readonly kind: ConversationKind;
  readonly title: string | null;
  readonly members: Set<string>;
  readonly messages: Message[];
  /** `${senderUserId}\n${clientMessageId}` → index in messages. */
  readonly byClientMessage: Map<string, number>;
};

export class MemoryConversationStore implements ConversationStore {
  private readonly conversations = new Map<string, StoredConversation>();
  private readonly limits: StoreLimits;

  constructor(limits: Partial<StoreLimits> = {}, private readonly clock: () => number = Date.now) {
    this.limits = { groupMembersMax: Math.min(limits.groupMembersMax ?? groupMembersMax, groupMembersMax) };
  }

  async appendMessage(input: AppendMessageInput): Promise<AppendMessageResult> {
    const conversation = this.conversations.get(input.conversationId);
    if (conversation === undefined || !conversation.members.has(input.senderUserId)) return { outcome: "not_a_member" };
    const dedupeKey = `${input.senderUserId}\n${input.clientMessageId}`;
    const existingIndex = conversation.byClientMessage.get(dedupeKey);
    const existing = existingIndex === undefined ? undefined : conversation.messages[existingIndex];
    if (existing !== undefined) return { outcome: "stored", message: { ...existing }, deduplicated: true };
    const message: Message = {
      conversationId: conversation.id,
      messageId: randomUUID(),
      seq: conversation.messages.length + 1,
      senderUserId: input.senderUserId,
      senderDeviceId: input.senderDeviceId,
      clientMessageId: input.clientMessageId,
      body: input.body,
      sentAtMs: this.clock(),
    };
    conversation.byClientMessage.set(dedupeKey, conversation.messages.length);
    conversation.messages.push(message);
    return { outcome: "stored", message: { ...message }, deduplicated: false };
  }

  async openDirect(input: OpenDirectInput): Promise<ConversationResult<"not_a_member" | "invalid_peer">> {
    if (input.userId === input.peerUserId) return { outcome: "invalid_peer" };
    let conversation = this.conversations.get(input.conversationId);
    if (conversation === undefined) {
      conversation = this.create(input.conversationId, "direct", null, [input.userId, input.peerUserId]);
    }
    if (!conversation.members.has(input.userId)) return { outcome: "not_a_member" };
    return { outcome: "conversation", conversation: summaryOf(conversation) };
  }

  async createGroup(input: CreateGroupInput): Promise<ConversationResult<"not_a_member" | "too_many_members">> {
    const memberUserIds = new Set([input.creatorUserId, ...input.memberUserIds]);
    if (memberUserIds.size > this.limits.groupMembersMax) return { outcome: "too_many_members" };
    let conversation = this.conversations.get(input.conversationId);
    if (conversation === undefined) {
      conversation = this.create(input.conversationId, "group", input.title, memberUserIds);
    }
    if (conversation.kind !== "group" || !conversation.members.has(input.creatorUserId)) return { outcome: "not_a_member" };
    return { outcome: "conversation", conversation: summaryOf(conversation) };
  }

  async addMembers(input: AddMembersInput): Promise<ConversationResult<"not_a_member" | "not_a_group" | "too_many_members">> {
    const conversation = this.conversations.get(input.conversationId);
    if (conversation === undefined || !conversation.members.has(input.userId)) return { outcome: "not_a_member" };
    if (conversation.kind !== "group") return { outcome: "not_a_group" };
    const added = input.userIds.filter((userId) => !conversation.members.has(userId));
    if (conversation.members.size + new Set(added).size > this.limits.groupMembersMax) return { outcome: "too_many_members" };
    for (const userId of added) conversation.members.add(userId);
    return { outcome: "conversation", conversation: summaryOf(conversation) };
  }

  async history(input: HistoryInput): Promise<HistoryResult> {
    const conversation = this.conversations.get(input.conversationId);
    if (conversation === undefined || !conversation.members.has(input.userId)) return { outcome: "not_a_member" };
    // Seqs are 1..n, so the message with seq s sits at index s - 1.
    const end = input.beforeSeq === null ? conversation.messages.length : Math.min(conversation.messages.length, input.beforeSeq - 1);
    const start = Math.max(0, end - input.limit);
    const newestFirst = conversation.messages.slice(start, end).map((message) => ({ ...message })).reverse();
    const { kept, trimmed } = trimToPageBudget(newestFirst);
    return { outcome: "history", messages: kept.reverse(), hasMore: trimmed || start > 0 };
  }

  async members(conversationId: string): Promise<string[]> {
    const conversation = this.conversations.get(conversationId);
    return conversation === undefined ? [] : [...conversation.members].sort();
  }

  private create(id: string, kind: ConversationKind, title: string | null, members: Iterable<string>): StoredConversation {
    const conversation: StoredConversation = { id, kind, title, members: new Set(members), messages: [], byClientMessage: new Map() };
    this.conversations.set(id, conversation);
    return conversation;
  }
}

function summaryOf(conversation: StoredConversation): ConversationSummary {
  return {
    conversationId: conversation.id,
    kind: conversation.kind,
    title: conversation.title,
    memberUserIds: [...conversation.members].sort(),
    lastSeq: conversation.messages.length,
  };
}
