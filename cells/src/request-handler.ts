// What a worker does with one request from an edge, apart from NATS: decode it, check that this worker
// owns its key, queue it behind earlier requests for the same conversation, run it against the store,
// reply, then fan the stored message out. The worker wires it to its subscription; tests drive it directly.
import { directConversationId, type Logger } from "@cellwire/cluster";
import {
  cellRequest,
  cellRequestKey,
  decodeJsonText,
  type CellReply,
  type CellRequest,
  type ConversationSummary,
  type Delivery,
  type Message,
} from "@cellwire/protocol";
import { cellErrorReply, type RequestFailure } from "./cell-error-reply.ts";
import type { KeyedSerialQueue } from "./keyed-serial-queue.ts";
import type { MemberCache } from "./member-cache.ts";
import { describeError } from "./store/errors.ts";
import type { ConversationResult, ConversationStore, StoreRefusal } from "./store/store.ts";

export type OwnershipView = {
  /** The owner of `key` on this worker's current view of its cell's ring; undefined when the ring is empty. */
  readonly ownerOf: (key: string) => string | undefined;
  /** False once this worker failed to renew its lease in time. */
  readonly leaseHeld: () => boolean;
};

export type RequestHandlerDependencies = {
  readonly workerId: string;
  readonly store: ConversationStore;
  readonly ownership: OwnershipView;
  readonly queue: KeyedSerialQueue;
  readonly memberCache: MemberCache;
  /** Publishes one live delivery on the recipient's delivery subject; MUST keep publish order. */
  readonly publishDelivery: (delivery: Delivery) => void;
  readonly logger: Logger & { readonly error: (message: string) => void };
};

/** The reply, and work to do once it has been sent (fan-out), still inside the conversation's turn. */
type Outcome = { readonly reply: CellReply; readonly afterReply?: () => Promise<void> };

export class CellRequestHandler {
  constructor(private readonly dependencies: RequestHandlerDependencies) {}

  /**
   * Handles one request payload. MUST be called in arrival order: requests for one conversation run in
   * the order of these calls. `respond` is called exactly once; the returned promise settles (never
   * rejects) when the request and its fan-out are done.
   */
  handle(payload: string, respond: (reply: CellReply) => void): Promise<void> {
    const { queue, workerId, ownership, logger } = this.dependencies;
    const decoded = decodeJsonText(cellRequest, payload);
    if (!decoded.ok) {
      const reason = `${decoded.failure.path} ${decoded.failure.reason}`;
      logger.warn(`worker ${workerId} got a request that does not decode: ${reason}`);
      respond(cellErrorReply({ kind: "bad_payload", reason }));
      return Promise.resolve();
    }
    const request = decoded.value;
    const key = cellRequestKey(request);
    if (!ownership.leaseHeld()) {
      respond(cellErrorReply({ kind: "lease_lapsed" }));
      return Promise.resolve();
    }
    // An empty ring (this worker's own lease not seen yet, and no other) does not stop it from serving.
    const ownerWorkerId = ownership.ownerOf(key);
    if (ownerWorkerId !== undefined && ownerWorkerId !== workerId) {
      respond(cellErrorReply({ kind: "not_owner", key, ownerWorkerId }));
      return Promise.resolve();
    }
    const invalid = invalidRequest(request);
    if (invalid !== undefined) {
      respond(cellErrorReply(invalid));
      return Promise.resolve();
    }
    const queued = queue.enqueue(key, () => this.run(request, respond));
    if (!queued.accepted) {
      respond(cellErrorReply({ kind: "overloaded", reason: queued.reason }));
      return Promise.resolve();
    }
    // run() catches everything itself; this only guards against a bug in it.
    return queued.result.catch((error: unknown) => logger.error(`request handling failed: ${describeError(error)}`));
  }

  private async run(request: CellRequest, respond: (reply: CellReply) => void): Promise<void> {
    const { logger } = this.dependencies;
    let outcome: Outcome;
    try {
      outcome = await this.perform(request);
    } catch (error) {
      logger.error(`${request.type} on ${request.conversationId} failed: ${describeError(error)}`);
      respond(cellErrorReply({ kind: "error", error }));
      return;
    }
    respond(outcome.reply);
    if (outcome.afterReply === undefined) return;
    try {
      await outcome.afterReply();
    } catch (error) {
      // The message is committed and acked; only its live deliveries are lost (devices catch up by history).
      logger.warn(`fan-out for ${request.conversationId} failed: ${describeError(error)}`);
    }
  }

  private async perform(request: CellRequest): Promise<Outcome> {
    const { store } = this.dependencies;
    switch (request.type) {
      case "cell.send": {
        const result = await store.appendMessage({
          conversationId: request.conversationId,
          senderUserId: request.senderUserId,
          senderDeviceId: request.senderDeviceId,
          clientMessageId: request.clientMessageId,
          body: request.body,
        });
        if (result.outcome !== "stored") return refused(result.outcome);
        const reply: CellReply = { type: "cell.stored", message: result.message, deduplicated: result.deduplicated };
        // A deduplicated send was fanned out when it was first stored.
        if (result.deduplicated) return { reply };
        return { reply, afterReply: () => this.fanOut(result.message) };
      }
      case "cell.openDirect":
        return this.conversationOutcome(
          await store.openDirect({ conversationId: request.conversationId, userId: request.userId, peerUserId: request.peerUserId }),
        );
      case "cell.createGroup":
        return this.conversationOutcome(
          await store.createGroup({
            conversationId: request.conversationId,
            creatorUserId: request.creatorUserId,
            title: request.title,
            memberUserIds: request.memberUserIds,
          }),
        );
      case "cell.addMembers":
        return this.conversationOutcome(
          await store.addMembers({ conversationId: request.conversationId, userId: request.userId, userIds: request.userIds }),
        );
      case "cell.history": {
        const result = await store.history({
          conversationId: request.conversationId,
          userId: request.userId,
          beforeSeq: request.beforeSeq,
          limit: request.limit,
        });
        if (result.outcome !== "history") return refused(result.outcome);
        return {
          reply: { type: "cell.historyPage", conversationId: request.conversationId, messages: result.messages, hasMore: result.hasMore },
        };
      }
    }
  }

  private conversationOutcome(result: ConversationResult<StoreRefusal>): Outcome {
    if (result.outcome !== "conversation") return refused(result.outcome);
    const conversation: ConversationSummary = result.conversation;
    this.dependencies.memberCache.set(conversation.conversationId, conversation.memberUserIds);
    return { reply: { type: "cell.conversation", conversation } };
  }

  /** One delivery per member, the sender included (their other devices show the message too). */
  private async fanOut(message: Message): Promise<void> {
    const { memberCache, store, publishDelivery, logger } = this.dependencies;
    let members = memberCache.get(message.conversationId);
    if (members === undefined) {
      members = await store.members(message.conversationId);
      memberCache.set(message.conversationId, members);
    }
    let failures = 0;
    for (const recipientUserId of members) {
      try {
        publishDelivery({ type: "delivery.message", recipientUserId, message });
      } catch (error) {
        failures += 1;
        if (failures === 1) logger.warn(`delivery to ${recipientUserId} failed: ${describeError(error)}`);
      }
    }
    if (failures > 1) logger.warn(`${failures} deliveries of ${message.messageId} failed`);
  }
}

function refused(refusal: StoreRefusal): Outcome {
  return { reply: cellErrorReply({ kind: "refused", refusal }) };
}

/** Checks what the decoder cannot: ids that must be derived in a particular way. */
function invalidRequest(request: CellRequest): RequestFailure | undefined {
  if (request.type === "cell.openDirect") {
    if (request.userId === request.peerUserId) return { kind: "refused", refusal: "invalid_peer" };
    // Derived from the pair, so nobody can open a "direct" conversation under another conversation's id.
    if (request.conversationId !== directConversationId(request.userId, request.peerUserId)) {
      return { kind: "invalid_field", message: "$.conversationId is not the direct conversation id of the pair" };
    }
  }
  if (request.type === "cell.createGroup" && !request.conversationId.startsWith("g-")) {
    return { kind: "invalid_field", message: "$.conversationId of a group must start with g-" };
  }
  return undefined;
}
