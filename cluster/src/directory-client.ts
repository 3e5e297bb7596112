// The distributed logic client's directory half: typed requests to the directory service over NATS.
import type { NatsConnection } from "@nats-io/transport-node";
import {
  directoryReply,
  directoryResolveUsersMax,
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
import { RemoteError } from "./errors.ts";
import { requestJson } from "./nats-json.ts";
import { TurnBatch, type Settled } from "./turn-batch.ts";

/** The requests answered with directory.entry that place or assign (lookups answer undefined for no entry). */
type EntryRequestType = "directory.resolveUser" | "directory.assignUser" | "directory.placeConversation";

export type EntryResult = { readonly entry: DirectoryEntry; readonly placed: boolean };

export class DirectoryClient {
  private readonly subject: string;
  /** The users resolved within one turn, asked for in one request (a reconnect wave's new users). */
  private readonly userResolves: TurnBatch<string, EntryResult>;

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
    this.userResolves = new TurnBatch((userIds) => this.resolveUsers(userIds), directoryResolveUsersMax, setImmediate);
  }

  /**
   * The user's home cell; a user seen for the first time is placed on a registered cell. The users asked
   * for within one turn go in one directory.resolveUsers; a lone one in a directory.resolveUser.
   */
  resolveUser(userId: string): Promise<EntryResult> {
    return this.userResolves.run(userId);
  }

  private async resolveUsers(userIds: readonly string[]): Promise<Settled<EntryResult>[]> {
    const [onlyUserId] = userIds;
    if (userIds.length === 1 && onlyUserId !== undefined) {
      try {
        return [{ ok: true, value: await this.entry({ type: "directory.resolveUser", userId: onlyUserId }) }];
      } catch (error) {
        return [{ ok: false, error }];
      }
    }
    const { replies } = await this.ask({ type: "directory.resolveUsers", userIds: [...userIds] });
    if (replies.length !== userIds.length)
      throw new RemoteError("internal", `the directory answered ${replies.length} of ${userIds.length} users in directory.resolveUsers`);
    return replies.map((reply, index): Settled<EntryResult> => {
      const userId = userIds[index];
      try {
        const { entry, placed } = expectDirectoryReply({ type: "directory.resolveUser" }, reply);
        if (entry.kind !== "user" || entry.id !== userId)
          throw new RemoteError("internal", `the directory answered the entry of ${entry.kind} ${entry.id} for user ${String(userId)}`);
        return { ok: true, value: { entry, placed } };
      } catch (error) {
        return { ok: false, error };
      }
    });
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
