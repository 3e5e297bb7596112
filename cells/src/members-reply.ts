// cell.members: a conversation's member list, for typing at the edges. Read-only: one read of the members,
// no write and no epoch. A conversation that does not exist, or an asker who is not one of its members,
// answers not_a_member, so a non-member learns nothing about the conversation.
import type { CellMembersRequest, CellReply } from "@cellwire/protocol";
import { cellErrorReply } from "./cell-error-reply.ts";
import type { ConversationStore } from "./store/store.ts";

export async function membersReply(store: Pick<ConversationStore, "members">, request: CellMembersRequest): Promise<CellReply> {
  const memberUserIds = await store.members(request.conversationId);
  if (!memberUserIds.includes(request.userId)) return cellErrorReply({ kind: "refused", refusal: "not_a_member" });
  return { type: "cell.members", conversationId: request.conversationId, memberUserIds };
}
