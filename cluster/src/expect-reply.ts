// The one way a requester turns a reply into the success it expects (protocol/src/reply-types.ts): the
// narrowed reply, or the typed error the edge's error mapping and the relay already handle. An error reply
// keeps its code (and retryAfterMs); any other reply is a bug or a version skew, RemoteError internal.
import {
  isCellReplyOf,
  isDirectoryReplyOf,
  type CellReply,
  type CellReplyOf,
  type CellRequest,
  type DirectoryReply,
  type DirectoryReplyOf,
  type DirectoryRequest,
} from "@cellwire/protocol";
import { RemoteError } from "./errors.ts";

/**
 * The reply `request` expects, narrowed. Throws RemoteError with the cell.error's code and message (and its
 * retryAfterMs), or RemoteError internal for any other reply, cell.moved included (a Router follows
 * moves, so one reaching here was not routed to the key's home). `from` names who answered (e.g. "cell a"),
 * prefixed to the error's message; without it a cell.error's message is kept as the cell wrote it.
 */
export function expectCellReply<T extends CellRequest["type"]>(
  request: { readonly type: T },
  reply: CellReply,
  from?: string,
): CellReplyOf<T> {
  if (isCellReplyOf(request.type, reply)) return reply;
  if (reply.type === "cell.error") {
    const message = from === undefined ? reply.message : `${from} refused ${request.type}: ${reply.message}`;
    throw new RemoteError(reply.code, message, reply.retryAfterMs === undefined ? {} : { retryAfterMs: reply.retryAfterMs });
  }
  throw new RemoteError("internal", `${from ?? "the cell"} answered ${reply.type} to ${request.type}`);
}

/** Like expectCellReply, for the directory: directory.error's code and message, else RemoteError internal. */
export function expectDirectoryReply<T extends DirectoryRequest["type"]>(
  request: { readonly type: T },
  reply: DirectoryReply,
): DirectoryReplyOf<T> {
  if (isDirectoryReplyOf(request.type, reply)) return reply;
  if (reply.type === "directory.error") throw new RemoteError(reply.code, reply.message);
  throw new RemoteError("internal", `the directory answered ${reply.type} to ${request.type}`);
}
