// What the directory answers to each request, from the data in Redis: the mapping of a decoded
// DirectoryRequest to its DirectoryReply, apart from the NATS service that receives and sends them
// (directory-service.ts). Expected refusals become error replies here; the one place where directory
// errors meet the wire is errorReply.
import { CellwireError } from "@cellwire/cluster";
import type { DirectoryEntry, DirectoryEntryReply, DirectoryErrorReply, DirectoryReply, DirectoryRequest } from "@cellwire/protocol";
import type { DirectoryRefusal, PlacedEntry, RedisDirectory } from "./redis-directory.ts";

/** Maps any failure of a request to its reply: the one place where directory errors meet the wire. */
export function errorReply(error: unknown): DirectoryErrorReply {
  if (error instanceof CellwireError) return { type: "directory.error", code: error.code, message: error.message.slice(0, 2000) };
  return { type: "directory.error", code: "internal", message: "unexpected directory error; it has been logged" };
}

function refusalReply(refusal: DirectoryRefusal<DirectoryErrorReply["code"]>): DirectoryErrorReply {
  return { type: "directory.error", code: refusal.code, message: refusal.message };
}

/** A placement's entry, placed or found, or its refusal. */
function entryReply(result: PlacedEntry | DirectoryRefusal<DirectoryErrorReply["code"]>): DirectoryEntryReply | DirectoryErrorReply {
  return result.ok ? { type: "directory.entry", entry: result.entry, placed: result.placed } : refusalReply(result);
}

/**
 * Answers one decoded request; expected refusals become error replies, operating errors are thrown.
 * `moved` is called with the entry after every successful directory.moveEntry, a repeat included, before
 * the reply is sent: whoever announces the change (directory.changed) hooks in there.
 */
export async function answerDirectoryRequest(
  directory: RedisDirectory,
  request: DirectoryRequest,
  random: () => number,
  moved: (entry: DirectoryEntry) => void = () => {},
): Promise<DirectoryReply> {
  switch (request.type) {
    case "directory.moveEntry": {
      const { kind, id, fromCellId, toCellId, expectedEpoch } = request;
      const result = await directory.moveEntry({ kind, id, fromCellId, toCellId, expectedEpoch });
      if (!result.ok) return refusalReply(result);
      moved(result.entry);
      return { type: "directory.entry", entry: result.entry, placed: false };
    }
    case "directory.setCellState": {
      const result = await directory.setCellState(request.cellId, request.state);
      return result.ok ? { type: "directory.cells", cells: result.cells } : refusalReply(result);
    }
    case "directory.cellEntries": {
      const result = await directory.cellEntries(request.cellId, request.kind, request.cursor, request.count);
      if (!result.ok) return refusalReply(result);
      return { type: "directory.cellEntries", cellId: request.cellId, kind: request.kind, ids: result.ids, cursor: result.cursor };
    }
    case "directory.resolveUser": {
      const result = await directory.resolveUser(request.userId, random());
      return entryReply(result);
    }
    case "directory.resolveUsers": {
      // One script call for all of them (one Redis round trip); an error of the call fails the request.
      const results = await directory.resolveUsers(request.userIds.map((userId) => ({ userId, random: random() })));
      return { type: "directory.entries", replies: results.map(entryReply) };
    }
    case "directory.assignUser": {
      const result = await directory.assignUser(request.userId, request.cellId);
      return entryReply(result);
    }
    case "directory.lookupUser": {
      const entry = await directory.lookupUser(request.userId);
      if (entry === undefined) return { type: "directory.error", code: "not_found", message: `no entry for user ${request.userId}` };
      return { type: "directory.entry", entry, placed: false };
    }
    case "directory.lookupConversation": {
      const entry = await directory.lookupConversation(request.conversationId);
      if (entry === undefined)
        return { type: "directory.error", code: "not_found", message: `no entry for conversation ${request.conversationId}` };
      return { type: "directory.entry", entry, placed: false };
    }
    case "directory.placeConversation": {
      const result = await directory.placeConversation(request.conversationId, request.preferredCellId, random());
      return entryReply(result);
    }
    case "directory.registerCell": {
      const result = await directory.registerCell(request.cellId, request.weight);
      return result.ok ? { type: "directory.cells", cells: result.cells } : refusalReply(result);
    }
    case "directory.listCells":
      return { type: "directory.cells", cells: await directory.listCells() };
  }
}
