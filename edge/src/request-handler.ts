// Serves one authenticated request frame: finds the conversation's home cell through the cached
// directory, asks the owner worker through the cell router, and turns the reply into a frame.
import { randomBytes } from "node:crypto";
import { directConversationId, RemoteError, type EntryResult } from "@cellwire/cluster";
import {
  historyPageLimitDefault,
  type CellReply,
  type CellRequest,
  type ClientRequestFrame,
  type DirectoryEntry,
  type SequencedEvent,
  type ServerFrame,
  type TypingFrame,
  type WatchPresenceFrame,
} from "@cellwire/protocol";
import type { DirectoryCache } from "./directory-cache.ts";
import { clientErrorCode, errorFrame } from "./error-mapping.ts";

export interface CellRouting {
  request(cellId: string, request: CellRequest): Promise<CellReply>;
}

export interface DirectoryLookups {
  resolveUser(userId: string): Promise<EntryResult>;
  lookupConversation(conversationId: string): Promise<DirectoryEntry | undefined>;
  placeConversation(conversationId: string, preferredCellId: string): Promise<EntryResult>;
}

export type RequestContext = { readonly userId: string; readonly deviceId: string; readonly homeCellId: string };

/** The request frames a cell serves; typing and watchPresence are the edge's own (edge-core.ts). */
export type CellServedFrame = Exclude<ClientRequestFrame, TypingFrame | WatchPresenceFrame>;

export class RequestHandler {
  constructor(
    private readonly directory: DirectoryLookups,
    private readonly cache: DirectoryCache,
    private readonly router: CellRouting,
  ) {}

  /** The user's home cell, cached. */
  async homeCellOf(userId: string): Promise<string> {
    const entry = await this.cache.get(`user:${userId}`, async () => (await this.directory.resolveUser(userId)).entry);
    if (entry === undefined) throw new RemoteError("directory_unavailable", `no directory entry for user ${userId}`);
    return entry.cellId;
  }

  /** A page of the user's mailbox from the owner of the user in the home cell. */
  async mailboxPage(homeCellId: string, userId: string, afterSeq: number, limit: number): Promise<{ events: SequencedEvent[]; headSeq: number; floorSeq: number }> {
    const reply = await this.router.request(homeCellId, { type: "cell.mailboxPage", userId, afterSeq, limit });
    if (reply.type === "cell.mailboxEvents") return { events: reply.events, headSeq: reply.headSeq, floorSeq: reply.floorSeq };
    if (reply.type === "cell.error") throw new RemoteError(reply.code, reply.message);
    throw new RemoteError("internal", `unexpected cell reply ${reply.type}`);
  }

  async handle(context: RequestContext, frame: CellServedFrame): Promise<ServerFrame> {
    switch (frame.type) {
      case "ping":
        return { type: "pong", requestId: frame.requestId };
      case "send": {
        const cellId = await this.conversationCell(frame.conversationId);
        if (cellId === undefined) return errorFrame("not_a_member", "not a member of this conversation", frame.requestId);
        const reply = await this.router.request(cellId, {
          type: "cell.send",
          senderUserId: context.userId,
          senderDeviceId: context.deviceId,
          conversationId: frame.conversationId,
          clientMessageId: frame.clientMessageId,
          body: frame.body,
        });
        if (reply.type === "cell.stored") {
          const { message } = reply;
          return { type: "ack", requestId: frame.requestId, conversationId: message.conversationId, messageId: message.messageId, seq: message.seq, sentAtMs: message.sentAtMs };
        }
        return this.unexpected(reply, frame.requestId);
      }
      case "openDirect": {
        if (frame.peerUserId === context.userId) return errorFrame("invalid_peer", "a direct conversation needs another user", frame.requestId);
        const conversationId = directConversationId(context.userId, frame.peerUserId);
        const cellId = await this.placeConversation(conversationId, context.homeCellId);
        const reply = await this.router.request(cellId, { type: "cell.openDirect", userId: context.userId, peerUserId: frame.peerUserId, conversationId });
        return this.conversationFrame(reply, frame.requestId);
      }
      case "createGroup": {
        const conversationId = `g-${randomBytes(17).toString("base64url").slice(0, 22)}`;
        const cellId = await this.placeConversation(conversationId, context.homeCellId);
        const reply = await this.router.request(cellId, {
          type: "cell.createGroup",
          creatorUserId: context.userId,
          conversationId,
          title: frame.title,
          memberUserIds: frame.memberUserIds,
        });
        return this.conversationFrame(reply, frame.requestId);
      }
      case "addMembers": {
        const cellId = await this.conversationCell(frame.conversationId);
        if (cellId === undefined) return errorFrame("not_a_member", "not a member of this conversation", frame.requestId);
        const reply = await this.router.request(cellId, { type: "cell.addMembers", userId: context.userId, conversationId: frame.conversationId, userIds: frame.userIds });
        return this.conversationFrame(reply, frame.requestId);
      }
      case "read":
      case "delivered": {
        // Routed like a send: the conversation's owner keeps the positions and fans the receipt out.
        const cellId = await this.conversationCell(frame.conversationId);
        if (cellId === undefined) return errorFrame("not_a_member", "not a member of this conversation", frame.requestId);
        const reply = await this.router.request(cellId, {
          type: "cell.receipt",
          userId: context.userId,
          conversationId: frame.conversationId,
          position: frame.type,
          seq: frame.seq,
        });
        if (reply.type === "cell.receipt") {
          return { type: "receiptAck", requestId: frame.requestId, conversationId: reply.conversationId, readSeq: reply.readSeq, deliveredSeq: reply.deliveredSeq };
        }
        return this.unexpected(reply, frame.requestId);
      }
      case "history": {
        const cellId = await this.conversationCell(frame.conversationId);
        if (cellId === undefined) return errorFrame("not_a_member", "not a member of this conversation", frame.requestId);
        const reply = await this.router.request(cellId, {
          type: "cell.history",
          userId: context.userId,
          conversationId: frame.conversationId,
          beforeSeq: frame.beforeSeq ?? null,
          limit: frame.limit ?? historyPageLimitDefault,
        });
        if (reply.type === "cell.historyPage") {
          return { type: "historyPage", requestId: frame.requestId, conversationId: reply.conversationId, messages: reply.messages, hasMore: reply.hasMore };
        }
        return this.unexpected(reply, frame.requestId);
      }
    }
  }

  /** The conversation's home cell (cached); undefined when the directory knows no such conversation. */
  async conversationCell(conversationId: string): Promise<string | undefined> {
    const entry = await this.cache.get(`conversation:${conversationId}`, (key) => this.directory.lookupConversation(key.slice("conversation:".length)));
    return entry?.cellId;
  }

  private async placeConversation(conversationId: string, preferredCellId: string): Promise<string> {
    const key = `conversation:${conversationId}`;
    const entry = await this.cache.get(key, async () => (await this.directory.placeConversation(conversationId, preferredCellId)).entry);
    if (entry === undefined) throw new RemoteError("directory_unavailable", `no directory entry for ${conversationId}`);
    return entry.cellId;
  }

  private conversationFrame(reply: CellReply, requestId: string): ServerFrame {
    if (reply.type === "cell.conversation") return { type: "conversation", requestId, conversation: reply.conversation };
    return this.unexpected(reply, requestId);
  }

  private unexpected(reply: CellReply, requestId: string): ServerFrame {
    if (reply.type === "cell.error") {
      const code = clientErrorCode(reply.code);
      return errorFrame(code, code === "internal" ? "internal error" : reply.message, requestId);
    }
    throw new RemoteError("internal", `unexpected cell reply ${reply.type}`);
  }
}
