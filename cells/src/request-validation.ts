// The checks of a cell request that its decoder cannot make: ids that must be derived in a particular way
// (a direct conversation's from its pair, a group's prefix, a mailbox event's from the event).
import { directConversationId } from "@cellwire/cluster";
import { mailboxEventId, type CellRequest } from "@cellwire/protocol";
import type { RequestFailure } from "./cell-error-reply.ts";

/** Checks what the decoder cannot: ids that must be derived in a particular way. */
export function invalidRequest(request: CellRequest, directConversationKey: string): RequestFailure | undefined {
  if (request.type === "cell.openDirect") {
    if (request.userId === request.peerUserId) return { kind: "refused", refusal: "invalid_peer" };
    // Derived from the pair, so nobody can open a "direct" conversation under another conversation's id.
    if (request.conversationId !== directConversationId(directConversationKey, request.userId, request.peerUserId)) {
      return { kind: "invalid_field", message: "$.conversationId is not the direct conversation id of the pair" };
    }
  }
  if (request.type === "cell.createGroup" && !request.conversationId.startsWith("g-")) {
    return { kind: "invalid_field", message: "$.conversationId of a group must start with g-" };
  }
  // One mailbox entry per message or receipt: an event id of another shape would let it in twice.
  if (request.type === "cell.appendMailbox" && request.eventId !== mailboxEventId(request.event)) {
    return { kind: "invalid_field", message: "$.eventId is not the event id of the event" };
  }
  if (request.type === "cell.import" && request.kind === "conversation" && request.first && request.conversation === null) {
    return { kind: "invalid_field", message: "$.conversation is required on the first page" };
  }
  if (
    request.type === "cell.import" &&
    request.kind === "user" &&
    request.events.some((entry) => entry.eventId !== mailboxEventId(entry.event))
  ) {
    return { kind: "invalid_field", message: "$.events: an event id is not the event id of its event" };
  }
  return undefined;
}
