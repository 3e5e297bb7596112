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
import { expectDirectoryReply } from "./expect-reply.ts";
import { requestJson } from "./nats-json.ts";

/** The requests answered with directory.entry that place or assign (lookups answer undefined for no entry). */
type EntryRequestType = "directory.resolveUser" | "directory.assignUser" | "directory.placeConversation";

export type EntryResult = { readonly entry: DirectoryEntry; readonly placed: boolean };

export class DirectoryClient {
  private readonly subject: string;

  constructor(
    private readonly connection: NatsConnection,
    namespace: string,
    private readonly timeoutMs: number,
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

  private send(request: DirectoryRequest): Promise<DirectoryReply> {
    return requestJson(this.connection, this.subject, request, directoryReply, this.timeoutMs, "directory_unavailable");
  }
}
