// cell.members: a conversation's member list, for typing at the edges. Read-only: one read of the members,
// no write and no epoch. A conversation that does not exist, or an asker who is not one of its members,
// answers not_a_member, so a non-member learns nothing about the conversation.
// A conversation migrating in answers `moving`, one that moved away cell.moved (while frozen it is served).
import type { CellMembersRequest, CellReply } from "@cellwire/protocol";
import { cellErrorReply, movedReply } from "./cell-error-reply.ts";
import type { ConversationStore } from "./store/store.ts";

export async function membersReply(
  store: Pick<ConversationStore, "members">,
  request: CellMembersRequest,
  key: string = request.conversationId,
): Promise<CellReply> {
  const result = await store.members(request.conversationId);
  if (result.outcome === "moving") return cellErrorReply({ kind: "moving", key });
  if (result.outcome === "moved") return movedReply("conversation", request.conversationId, result);
  const { memberUserIds } = result;
  if (!memberUserIds.includes(request.userId)) return cellErrorReply({ kind: "refused", refusal: "not_a_member" });
  return { type: "cell.members", conversationId: request.conversationId, memberUserIds };
}
