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
  type DirectoryRequest,
} from "@cellwire/protocol";
import { RemoteError } from "./errors.ts";
import { requestJson } from "./nats-json.ts";

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
    const reply = await this.send({ type: "directory.lookupUser", userId });
    if (reply.type === "directory.error" && reply.code === "not_found") return undefined;
    return this.expectEntry(reply).entry;
  }

  /** The conversation's home cell, or undefined when the directory has no entry for it. */
  async lookupConversation(conversationId: string): Promise<DirectoryEntry | undefined> {
    const reply = await this.send({ type: "directory.lookupConversation", conversationId });
    if (reply.type === "directory.error" && reply.code === "not_found") return undefined;
    return this.expectEntry(reply).entry;
  }

  placeConversation(conversationId: string, preferredCellId: string): Promise<EntryResult> {
    return this.entry({ type: "directory.placeConversation", conversationId, preferredCellId });
  }

  async registerCell(cellId: string, weight: number): Promise<CellRecord[]> {
    return this.expectCells(await this.send({ type: "directory.registerCell", cellId, weight }));
  }

  async listCells(): Promise<CellRecord[]> {
    return this.expectCells(await this.send({ type: "directory.listCells" }));
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
    return this.expectEntry(await this.send({ type: "directory.moveEntry", ...move })).entry;
  }

  async setCellState(cellId: string, state: CellState): Promise<CellRecord[]> {
    return this.expectCells(await this.send({ type: "directory.setCellState", cellId, state }));
  }

  /** One page of the ids of `kind` homed on `cellId`; a returned cursor of "0" means the scan is over. */
  async cellEntries(cellId: string, kind: DirectoryEntryKind, cursor: string, count: number): Promise<{ ids: string[]; cursor: string }> {
    const reply = await this.send({ type: "directory.cellEntries", cellId, kind, cursor, count });
    if (reply.type === "directory.cellEntries") return { ids: reply.ids, cursor: reply.cursor };
    if (reply.type === "directory.error") throw new RemoteError(reply.code, reply.message);
    throw new RemoteError("internal", `unexpected directory reply ${reply.type}`);
  }

  private async entry(request: DirectoryRequest): Promise<EntryResult> {
    return this.expectEntry(await this.send(request));
  }

  private send(request: DirectoryRequest): Promise<DirectoryReply> {
    return requestJson(this.connection, this.subject, request, directoryReply, this.timeoutMs, "directory_unavailable");
  }

  private expectEntry(reply: DirectoryReply): EntryResult {
    if (reply.type === "directory.entry") return { entry: reply.entry, placed: reply.placed };
    if (reply.type === "directory.error") throw new RemoteError(reply.code, reply.message);
    throw new RemoteError("internal", `unexpected directory reply ${reply.type}`);
  }

  private expectCells(reply: DirectoryReply): CellRecord[] {
    if (reply.type === "directory.cells") return reply.cells;
    if (reply.type === "directory.error") throw new RemoteError(reply.code, reply.message);
    throw new RemoteError("internal", `unexpected directory reply ${reply.type}`);
  }
}
