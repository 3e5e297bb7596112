// Serves one authenticated request frame: finds the conversation's home cell through the cached
// directory, asks the owner worker through the cell router, and turns the reply into a frame. Every
// request goes through one Router, so a conversation or a mailbox that moved to another cell is
// followed (cell.moved) and a migration's pause is waited out (moving).
import { randomBytes } from "node:crypto";
import {
  CachedHomes,
  directConversationId,
  directoryCacheKey,
  expectCellReply,
  keyedGroupConversationId,
  Router,
  RemoteError,
  type DirectoryCache,
  type EntryResult,
  type HomeLocation,
  type HomeOutcome,
  type HomeReply,
  type RouterDependencies,
  type RouterOptions,
} from "@cellwire/cluster";
import {
  historyPageLimitDefault,
  type CellReply,
  type CellRequest,
  type ClientRequestFrame,
  type DirectoryEntry,
  type RefreshFrame,
  type SequencedEvent,
  type ServerFrame,
  type TypingFrame,
  type WatchPresenceFrame,
} from "@cellwire/protocol";
import type { ConversationPage } from "./conversation-cursor.ts";
import { clientErrorCode, errorFrame, notAMemberFrame } from "./error-mapping.ts";

export interface CellRouting {
  /** `deadlineAtMs`: when the caller stops waiting (monotonic ms); the router MUST NOT wait past it. */
  /** `traceparent`: the request's trace context with tracing off (docs/decisions/0037), for its headers. */
  request(cellId: string, request: CellRequest, deadlineAtMs?: number, traceparent?: string): Promise<CellReply>;
}

export interface DirectoryLookups {
  resolveUser(userId: string): Promise<EntryResult>;
  lookupConversation(conversationId: string): Promise<DirectoryEntry | undefined>;
  placeConversation(conversationId: string, preferredCellId: string): Promise<EntryResult>;
}

export type RequestContext = {
  readonly userId: string;
  readonly deviceId: string;
  readonly homeCellId: string;
  /** With tracing off: the request's own trace context, sent to the cell in its headers (docs/decisions/0037). */
  readonly traceparent?: string;
};

/** The request frames a cell serves; typing, watchPresence and refresh are the edge's own (session.ts). */
export type CellServedFrame = Exclude<ClientRequestFrame, TypingFrame | WatchPresenceFrame | RefreshFrame>;

export type HomeRouting = {
  readonly options: RouterOptions;
  readonly dependencies: RouterDependencies;
  /**
   * EDGE_REQUEST_DEADLINE_MS: the one deadline of each request, counted from its arrival here and carried
   * through both routers to the worker (docs/decisions/0020). Below the SDK's 10 s requestTimeoutMs, so
   * the edge answers before the client gives up and no worker starts what the client was told failed.
   */
  readonly requestDeadlineMs: number;
};

export class RequestHandler {
  private readonly router: Router;
  private readonly monotonicNowMs: () => number;
  private readonly requestDeadlineMs: number;

  constructor(
    private readonly directory: DirectoryLookups,
    private readonly cache: DirectoryCache,
    router: CellRouting,
    homeRouting: HomeRouting,
    /** CELLWIRE_DIRECT_CONVERSATION_KEY: direct conversation ids are derived with it. */
    private readonly directConversationKey: string,
  ) {
    // A user seen for the first time is placed by the directory; a conversation never placed has no home.
    const homes = new CachedHomes(
      async (key) => (key.kind === "user" ? (await directory.resolveUser(key.id)).entry : directory.lookupConversation(key.id)),
      cache,
    );
    this.router = new Router(homes, router, homeRouting.options, homeRouting.dependencies);
    this.monotonicNowMs = homeRouting.dependencies.monotonicNowMs;
    this.requestDeadlineMs = homeRouting.requestDeadlineMs;
  }

  /** The deadline (monotonic ms) of a request arriving now. */
  deadlineFromNow(): number {
    return this.monotonicNowMs() + this.requestDeadlineMs;
  }

  /**
   * The user's home cell and its epoch, cached; a user seen for the first time is placed. `placedNow`: this
   * call's own directory request placed the user, so no cell held anything of theirs when it was answered
   * (docs/decisions/0043). Never from the cache, from another caller's request in flight, or when a move
   * published meanwhile replaced the entry.
   */
  async homeOf(userId: string): Promise<HomeLocation & { readonly placedNow: boolean }> {
    let placed = undefined as DirectoryEntry | undefined;
    const entry = await this.cache.get(directoryCacheKey("user", userId), async () => {
      const resolved = await this.directory.resolveUser(userId);
      if (resolved.placed) placed = resolved.entry;
      return resolved.entry;
    });
    if (entry === undefined) throw new RemoteError("directory_unavailable", `no directory entry for user ${userId}`);
    const placedNow = placed !== undefined && placed.cellId === entry.cellId && placed.epoch === entry.epoch;
    return { cellId: entry.cellId, epoch: entry.epoch, placedNow };
  }

  /**
   * A page of the user's mailbox from the owner of the user in its home cell, and the home that served
   * it: after a move of the mailbox, a newer one than the session knew.
   */
  async mailboxPage(
    userId: string,
    afterSeq: number,
    limit: number,
  ): Promise<{ events: SequencedEvent[]; headSeq: number; floorSeq: number; incarnation: string | undefined; home: HomeLocation }> {
    const request = { type: "cell.mailboxPage", userId, afterSeq, limit } as const;
    const outcome = await this.router.toHome(request, this.deadlineFromNow());
    if (outcome.kind === "no_entry") throw new RemoteError("directory_unavailable", `no directory entry for user ${userId}`);
    const { events, headSeq, floorSeq, incarnation } = expectCellReply(request, outcome.reply);
    return { events, headSeq, floorSeq, incarnation, home: outcome.home };
  }

  /**
   * A page of a conversation's log after `afterSeq` (null: from the user's join point), from the
   * conversation's owner in its home cell. A conversation the user is not a member of (or that does not
   * exist) throws RemoteError not_a_member.
   */
  async conversationPage(userId: string, conversationId: string, afterSeq: number | null, limit: number): Promise<ConversationPage> {
    const request = { type: "cell.messagesAfter", userId, conversationId, afterSeq, limit } as const;
    const outcome = await this.router.toHome(request, this.deadlineFromNow());
    if (outcome.kind === "no_entry") throw new RemoteError("not_a_member", `no conversation ${conversationId}`);
    const reply = expectCellReply(request, outcome.reply);
    return { afterSeq: reply.afterSeq, messages: reply.messages, headSeq: reply.headSeq };
  }

  /** The conversation's home cell as cached, without asking the directory (undefined when not cached). */
  cachedConversationHome(conversationId: string): string | undefined {
    return this.cache.peek(directoryCacheKey("conversation", conversationId))?.cellId;
  }

  /** The directory published a move: the cached entry, if older, is replaced. */
  directoryChanged(entry: DirectoryEntry): void {
    this.cache.changed(entry);
  }

  /** Sends a request to its key's home cell, following moves (see Router). */
  requestAtHome(request: CellRequest): Promise<HomeOutcome> {
    return this.router.toHome(request);
  }

  /** Sends a request to the owner of its ring key in a cell the caller names (see Router.toCell). */
  requestInCell(cellId: string, request: CellRequest): Promise<CellReply> {
    return this.router.toCell(cellId, request);
  }

  /**
   * Serves one request frame within one deadline (by default EDGE_REQUEST_DEADLINE_MS from now). For a send,
   * `afterClientMessageId` is the send of this session to the same conversation still in flight before it
   * (see SendOrder): the cell stores this one only after that one.
   */
  async handle(
    context: RequestContext,
    frame: CellServedFrame,
    afterClientMessageId?: string,
    deadlineAtMs = this.deadlineFromNow(),
  ): Promise<ServerFrame> {
    switch (frame.type) {
      case "ping":
        return { type: "pong", requestId: frame.requestId };
      case "send": {
        const send: CellRequest = {
          type: "cell.send",
          senderUserId: context.userId,
          senderDeviceId: context.deviceId,
          conversationId: frame.conversationId,
          clientMessageId: frame.clientMessageId,
          body: frame.body,
        };
        const reply = await this.atConversationHome(
          afterClientMessageId === undefined ? send : { ...send, afterClientMessageId },
          deadlineAtMs,
          context.traceparent,
        );
        if (reply === undefined) return notAMemberFrame(frame.requestId);
        if (reply.type === "cell.stored") {
          const { message } = reply;
          return {
            type: "ack",
            requestId: frame.requestId,
            conversationId: message.conversationId,
            messageId: message.messageId,
            seq: message.seq,
            sentAtMs: message.sentAtMs,
          };
        }
        return this.unexpected(reply, frame.requestId);
      }
      case "openDirect": {
        if (frame.peerUserId === context.userId)
          return errorFrame("invalid_peer", "a direct conversation needs another user", frame.requestId);
        const conversationId = directConversationId(this.directConversationKey, context.userId, frame.peerUserId);
        await this.placeConversation(conversationId, context.homeCellId);
        const reply = await this.atPlacedConversationHome(
          { type: "cell.openDirect", userId: context.userId, peerUserId: frame.peerUserId, conversationId },
          deadlineAtMs,
          context.traceparent,
        );
        return this.conversationFrame(reply, frame.requestId);
      }
      case "createGroup": {
        // With a clientGroupId a retry names the same group; placing it and creating it are find-or-create.
        const conversationId =
          frame.clientGroupId === undefined
            ? `g-${randomBytes(17).toString("base64url").slice(0, 22)}`
            : keyedGroupConversationId(this.directConversationKey, context.userId, frame.clientGroupId);
        await this.placeConversation(conversationId, context.homeCellId);
        const reply = await this.atPlacedConversationHome(
          {
            type: "cell.createGroup",
            creatorUserId: context.userId,
            conversationId,
            title: frame.title,
            memberUserIds: frame.memberUserIds,
          },
          deadlineAtMs,
          context.traceparent,
        );
        return this.conversationFrame(reply, frame.requestId);
      }
      case "addMembers": {
        const reply = await this.atConversationHome(
          { type: "cell.addMembers", userId: context.userId, conversationId: frame.conversationId, userIds: frame.userIds },
          deadlineAtMs,
          context.traceparent,
        );
        if (reply === undefined) return notAMemberFrame(frame.requestId);
        return this.conversationFrame(reply, frame.requestId);
      }
      case "read":
      case "delivered": {
        // Routed like a send: the conversation's owner keeps the positions and fans the receipt out.
        const reply = await this.atConversationHome(
          {
            type: "cell.receipt",
            userId: context.userId,
            conversationId: frame.conversationId,
            position: frame.type,
            seq: frame.seq,
          },
          deadlineAtMs,
          context.traceparent,
        );
        if (reply === undefined) return notAMemberFrame(frame.requestId);
        if (reply.type === "cell.receipt") {
          return {
            type: "receiptAck",
            requestId: frame.requestId,
            conversationId: reply.conversationId,
            readSeq: reply.readSeq,
            deliveredSeq: reply.deliveredSeq,
          };
        }
        return this.unexpected(reply, frame.requestId);
      }
      case "history": {
        const reply = await this.atConversationHome(
          {
            type: "cell.history",
            userId: context.userId,
            conversationId: frame.conversationId,
            beforeSeq: frame.beforeSeq ?? null,
            limit: frame.limit ?? historyPageLimitDefault,
          },
          deadlineAtMs,
          context.traceparent,
        );
        if (reply === undefined) return notAMemberFrame(frame.requestId);
        if (reply.type === "cell.historyPage") {
          return {
            type: "historyPage",
            requestId: frame.requestId,
            conversationId: reply.conversationId,
            messages: reply.messages,
            hasMore: reply.hasMore,
          };
        }
        return this.unexpected(reply, frame.requestId);
      }
    }
  }

  /**
   * The reply of the conversation's home; undefined when the directory knows no such conversation, which
   * the caller answers with notAMemberFrame: the very bytes the home cell's not_a_member becomes.
   */
  private async atConversationHome(
    request: CellRequest,
    deadlineAtMs: number,
    traceparent: string | undefined,
  ): Promise<HomeReply | undefined> {
    const outcome = await this.router.toHome(request, deadlineAtMs, traceparent);
    return outcome.kind === "reply" ? outcome.reply : undefined;
  }

  /** Like atConversationHome, for a conversation this edge just placed: it must have an entry. */
  private async atPlacedConversationHome(request: CellRequest, deadlineAtMs: number, traceparent: string | undefined): Promise<HomeReply> {
    const reply = await this.atConversationHome(request, deadlineAtMs, traceparent);
    if (reply === undefined) throw new RemoteError("internal", `the directory lost the conversation of ${request.type} just placed`);
    return reply;
  }

  /** Places a new conversation (or finds where it already is) and caches the entry. */
  private async placeConversation(conversationId: string, preferredCellId: string): Promise<void> {
    const key = directoryCacheKey("conversation", conversationId);
    const entry = await this.cache.get(key, async () => (await this.directory.placeConversation(conversationId, preferredCellId)).entry);
    if (entry === undefined) throw new RemoteError("directory_unavailable", `no directory entry for ${conversationId}`);
  }

  private conversationFrame(reply: HomeReply, requestId: string): ServerFrame {
    if (reply.type === "cell.conversation") return { type: "conversation", requestId, conversation: reply.conversation };
    return this.unexpected(reply, requestId);
  }

  private unexpected(reply: HomeReply, requestId: string): ServerFrame {
    if (reply.type === "cell.error") {
      const code = clientErrorCode(reply.code);
      // A cell's internal error is logged here too, with the request's traceId (the session's error
      // handler logs what is thrown), so the edge's line and the worker's can be put side by side (0037).
      if (code === "internal" && reply.retryAfterMs === undefined)
        throw new RemoteError("internal", `the cell answered ${reply.code}: ${reply.message}`);
      const frame = errorFrame(code, code === "internal" ? "internal error" : reply.message, requestId);
      return reply.retryAfterMs === undefined ? frame : { ...frame, retryAfterMs: reply.retryAfterMs };
    }
    throw new RemoteError("internal", `unexpected cell reply ${reply.type}`);
  }
}
