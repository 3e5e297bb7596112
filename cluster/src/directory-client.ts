// The distributed logic client's directory half: typed requests to the directory service over NATS.
import type { NatsConnection } from "@nats-io/transport-node";
import {
  directoryReply,
  directorySubject,
  type CellRecord,
  type CellState,
  type DirectoryEntry,
  type DirectoryEntryKind,
  type DirectoryMoveEntry,
  type DirectoryReply,
  type DirectoryReplyOf,
  type DirectoryRequest,
} from "@cellwire/protocol";
import type { DirectoryRequestTiming } from "./directory-request-metrics.ts";
import { expectDirectoryReply } from "./expect-reply.ts";
import { requestJson } from "./nats-json.ts";

/** The requests answered with directory.entry that place or assign (lookups answer undefined for no entry). */
type EntryRequestType = "directory.resolveUser" | "directory.assignUser" | "directory.placeConversation";

export type EntryResult = { readonly entry: DirectoryEntry; readonly placed: boolean };

export class DirectoryClient {
  private readonly subject: string;

  /**
   * `timing`: an observer told of every request's latency and failure (edges and workers pass their
   * metrics'; the CLI passes none).
   */
  constructor(
    private readonly connection: NatsConnection,
    namespace: string,
    private readonly timeoutMs: number,
    private readonly timing?: DirectoryRequestTiming,
  ) {
    this.subject = directorySubject(namespace);
  }

  /** The user's home cell; a user seen for the first time is placed on a registered cell. */
  resolveUser(userId: string): Promise<EntryResult> {
    return this.entry({ type: "directory.resolveUser", userId });
  }

  assignUser(userId: string, cellId: string): Promise<EntryResult> {
    return this.entry({ type: "directory.assignUser", userId, cellId });
  }

  /** The user's entry, or undefined for a user never placed (unlike resolveUser, places nothing). */
  async lookupUser(userId: string): Promise<DirectoryEntry | undefined> {
    const request = { type: "directory.lookupUser", userId } as const;
    const reply = await this.send(request);
    if (reply.type === "directory.error" && reply.code === "not_found") return undefined;
    return expectDirectoryReply(request, reply).entry;
  }

  /** The conversation's home cell, or undefined when the directory has no entry for it. */
  async lookupConversation(conversationId: string): Promise<DirectoryEntry | undefined> {
    const request = { type: "directory.lookupConversation", conversationId } as const;
    const reply = await this.send(request);
    if (reply.type === "directory.error" && reply.code === "not_found") return undefined;
    return expectDirectoryReply(request, reply).entry;
  }

  placeConversation(conversationId: string, preferredCellId: string): Promise<EntryResult> {
    return this.entry({ type: "directory.placeConversation", conversationId, preferredCellId });
  }

  async registerCell(cellId: string, weight: number): Promise<CellRecord[]> {
    return (await this.ask({ type: "directory.registerCell", cellId, weight })).cells;
  }

  async listCells(): Promise<CellRecord[]> {
    return (await this.ask({ type: "directory.listCells" })).cells;
  }

  /** The entry of a user or a conversation, or undefined when there is none (places nothing). */
  lookup(kind: DirectoryEntryKind, id: string): Promise<DirectoryEntry | undefined> {
    return kind === "user" ? this.lookupUser(id) : this.lookupConversation(id);
  }

  /**
   * Flips an entry to `toCellId` with expectedEpoch + 1 (see DirectoryMoveEntry); throws RemoteError
   * entry_changed when another move won, not_found or unknown_cell.
   */
  async moveEntry(move: Omit<DirectoryMoveEntry, "type">): Promise<DirectoryEntry> {
    return (await this.ask({ type: "directory.moveEntry", ...move })).entry;
  }

  async setCellState(cellId: string, state: CellState): Promise<CellRecord[]> {
    return (await this.ask({ type: "directory.setCellState", cellId, state })).cells;
  }

  /** One page of the ids of `kind` homed on `cellId`; a returned cursor of "0" means the scan is over. */
  async cellEntries(cellId: string, kind: DirectoryEntryKind, cursor: string, count: number): Promise<{ ids: string[]; cursor: string }> {
    const reply = await this.ask({ type: "directory.cellEntries", cellId, kind, cursor, count });
    return { ids: reply.ids, cursor: reply.cursor };
  }

  private async entry(request: DirectoryRequest & { readonly type: EntryRequestType }): Promise<EntryResult> {
    const { entry, placed } = await this.ask(request);
    return { entry, placed };
  }

  /** Sends `request` and narrows the reply to the one its type expects (a directory.error throws RemoteError). */
  private async ask<T extends DirectoryRequest["type"]>(request: DirectoryRequest & { readonly type: T }): Promise<DirectoryReplyOf<T>> {
    return expectDirectoryReply<T>(request, await this.send(request));
  }

  /** Every request goes through here, the one place it is timed. */
  private send(request: DirectoryRequest): Promise<DirectoryReply> {
    return this.timing === undefined ? this.request(request) : this.timedRequest(request, this.timing);
  }

  private request(request: DirectoryRequest): Promise<DirectoryReply> {
    return requestJson(this.connection, this.subject, request, directoryReply, this.timeoutMs, "directory_unavailable");
  }

  /**
   * Tells `timing` how the request ended: failed when no answer came (timeout, no responders, an
   * undecodable reply) or the answer was a directory.error, except a lookup's not_found, which is the
   * answer "no entry".
   */
  private async timedRequest(request: DirectoryRequest, timing: DirectoryRequestTiming): Promise<DirectoryReply> {
    const startedAtMs = timing.monotonicNowMs();
    let reply: DirectoryReply;
    try {
      reply = await this.request(request);
    } catch (error) {
      timing.observer.requestEnded(request.type, timing.monotonicNowMs() - startedAtMs, true);
      throw error;
    }
    const failed = reply.type === "directory.error" && !(reply.code === "not_found" && lookupTypes.has(request.type));
    timing.observer.requestEnded(request.type, timing.monotonicNowMs() - startedAtMs, failed);
    return reply;
  }
}

/** The requests that answer not_found for a key without an entry, which their callers take as undefined. */
const lookupTypes: ReadonlySet<DirectoryRequest["type"]> = new Set(["directory.lookupUser", "directory.lookupConversation"]);
