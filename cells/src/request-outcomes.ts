// One mapper per request the keyed queue runs: what a store result answers, and what to do once the
// reply is sent (relay outbox rows, publish a delivery). Pure apart from the effects passed in, so the
// request handler keeps only the turn, the fencing and the dispatch (request-handler.ts).
// A write's `fenced` result never reaches a mapper: the handler's fenced write answers it.
import type {
  CellAppendMailboxRequest,
  CellImportRequest,
  CellMailboxPageRequest,
  CellReceiptRequest,
  CellReply,
  Delivery,
  DirectoryEntryKind,
} from "@cellwire/protocol";
import { cellErrorReply, movedReply } from "./cell-error-reply.ts";
import type {
  AppendMailboxResult,
  ConversationResult,
  Fenced,
  HistoryResult,
  ImportPageResult,
  MailboxPageResult,
  MarkReceiptResult,
  MigrationRefusal,
  OutboxEntry,
  StoreRefusal,
} from "./store/store.ts";

/** The reply, and work to do once it has been sent (relay, delivery), still inside the key's turn. */
export type Outcome = { readonly reply: CellReply; readonly afterReply?: () => Promise<void> };

/** Takes the outbox rows of a change just committed (RequestHandlerDependencies.relayOutbox). */
export type RelayOutbox = (conversationId: string, entries: readonly OutboxEntry[]) => void;

/** A request for a key that is migrating (`moving`, retryable) or moved away (cell.moved). */
export function migrating(kind: DirectoryEntryKind, id: string, key: string, refusal: MigrationRefusal): Outcome {
  return { reply: refusal.outcome === "moving" ? cellErrorReply({ kind: "moving", key }) : movedReply(kind, id, refusal) };
}

export function refused(refusal: StoreRefusal): Outcome {
  return { reply: cellErrorReply({ kind: "refused", refusal }) };
}

/** cell.openDirect, cell.createGroup, cell.addMembers: the conversation, then its joined events relayed. */
export function conversationOutcome(
  key: string,
  result: Exclude<ConversationResult<StoreRefusal>, Fenced>,
  relayOutbox: RelayOutbox,
): Outcome {
  if (result.outcome === "moving" || result.outcome === "moved") return migrating("conversation", key, key, result);
  if (result.outcome !== "conversation") return refused(result.outcome);
  const { conversation, outbox } = result;
  const reply: CellReply = { type: "cell.conversation", conversation };
  if (outbox.length === 0) return { reply };
  // The joined events reach the new members' mailboxes (in any cell) after the reply, as receipts do.
  return { reply, afterReply: async () => relayOutbox(conversation.conversationId, outbox) };
}

/** cell.history: a page of older messages, for a member. */
export function historyOutcome(conversationId: string, key: string, result: HistoryResult): Outcome {
  if (result.outcome === "moving" || result.outcome === "moved") return migrating("conversation", conversationId, key, result);
  if (result.outcome !== "history") return refused(result.outcome);
  return { reply: { type: "cell.historyPage", conversationId, messages: result.messages, hasMore: result.hasMore } };
}

/** cell.appendMailbox: the event's seq, then its live delivery unless it was stored before. */
export function appendedOutcome(
  request: CellAppendMailboxRequest,
  key: string,
  result: Exclude<AppendMailboxResult, Fenced>,
  publishDelivery: (delivery: Delivery) => void,
): Outcome {
  const { userId, event } = request;
  if (result.outcome === "moving" || result.outcome === "moved") return migrating("user", userId, key, result);
  const { seq, deduplicated } = result;
  const reply: CellReply = { type: "cell.appended", userId, seq, deduplicated };
  // A repeated append was published when it was first stored.
  if (deduplicated) return { reply };
  // Published within the user's turn, so deliveries leave in mailbox order.
  return { reply, afterReply: async () => publishDelivery({ type: "delivery.event", recipientUserId: userId, seq, event }) };
}

/** cell.receipt: the member's positions, then the receipt events relayed when a position advanced. */
export function receiptOutcome(
  request: CellReceiptRequest,
  key: string,
  result: Exclude<MarkReceiptResult, Fenced>,
  relayOutbox: RelayOutbox,
): Outcome {
  if (result.outcome === "moving" || result.outcome === "moved") return migrating("conversation", request.conversationId, key, result);
  if (result.outcome === "not_a_member") return refused(result.outcome);
  if (result.outcome === "seq_beyond_last") {
    return { reply: cellErrorReply({ kind: "invalid_field", message: `$.seq is beyond the conversation's last seq ${result.lastSeq}` }) };
  }
  const { readSeq, deliveredSeq, outbox } = result;
  const reply: CellReply = {
    type: "cell.receipt",
    conversationId: request.conversationId,
    userId: request.userId,
    readSeq,
    deliveredSeq,
    advanced: outbox.length > 0,
  };
  if (outbox.length === 0) return { reply };
  return { reply, afterReply: async () => relayOutbox(request.conversationId, outbox) };
}

/** cell.mailboxPage: a page of the user's mailbox with its head, floor and incarnation. */
export function mailboxPageOutcome(request: CellMailboxPageRequest, key: string, page: MailboxPageResult): Outcome {
  if (page.outcome !== "page") return migrating("user", request.userId, key, page);
  const { events, headSeq, floorSeq, incarnation } = page;
  return {
    reply: {
      type: "cell.mailboxEvents",
      userId: request.userId,
      events,
      headSeq,
      floorSeq,
      ...(incarnation === null ? {} : { incarnation }),
    },
  };
}

/** What an import page needs beyond its result: a warning's logger, and the outbox drain of a conversation that arrived. */
export type ImportEffects = {
  readonly warn: (message: string) => void;
  readonly drainOutbox?: ((conversationId: string) => void) | undefined;
};

/** cell.import: the key's state here after the page; a conversation that became active has its outbox drained. */
export function importedOutcome(
  request: CellImportRequest,
  key: string,
  result: Exclude<ImportPageResult, Fenced>,
  effects: ImportEffects,
): Outcome {
  switch (result.outcome) {
    case "moving":
      return { reply: cellErrorReply({ kind: "moving", key }) };
    case "not_importing":
      effects.warn(`an import page of ${key} from cell ${request.fromCellId} found no import in progress`);
      return {
        reply: { type: "cell.error", code: "internal", message: `no import of ${key} is in progress here; the move must start again` },
      };
    case "importing":
      return { reply: { type: "cell.imported", kind: request.kind, id: request.id, state: result.outcome } };
    case "active": {
      const reply: CellReply = { type: "cell.imported", kind: request.kind, id: request.id, state: "active" };
      // The outbox rows that came with the conversation are relayed now rather than at the next sweep.
      const { drainOutbox } = effects;
      if (request.kind !== "conversation" || drainOutbox === undefined) return { reply };
      return { reply, afterReply: async () => drainOutbox(request.id) };
    }
  }
}
