// The one derivation of where a cell request goes (issue 12): its home key, the directory entry whose
// cell serves it (a user's mailbox or a conversation), and its ring key, the string that picks the owner
// worker on that cell's ring. Both routers, the worker's ownership check, migration and the frozen-key
// sweeper read keys from here, so a request kind is placed once.
import type { CellRequest, DirectoryEntryKind } from "./cell-messages.ts";

/** The directory entry whose cell serves a request: a user's mailbox (`user`) or a conversation. */
export type HomeKey = { readonly kind: DirectoryEntryKind; readonly id: string };

/**
 * Where a request goes. `home`: the key whose home cell serves it; undefined for the kinds any worker of
 * the asked cell answers for itself (the caller names the cell). `ring`: the key that picks the worker on
 * that cell's ring.
 */
export type RequestKeys = { readonly home: HomeKey | undefined; readonly ring: string };

/** The ring key of a user's mailbox; conversation keys are their ids (which never start with "user:"). */
export function userRingKey(userIdValue: string): string {
  return `user:${userIdValue}`;
}

/** Any worker can count a cell's rows or serve its dead letters; the ring picks one (no id matches this key). */
export const cellStatsRingKey = "stats:cell";

/** The ring key of a home key: a mailbox's is its user's ring key, a conversation's is its id. */
export function ringKeyOf(key: HomeKey): string {
  return key.kind === "user" ? userRingKey(key.id) : key.id;
}

function homed(kind: DirectoryEntryKind, id: string): RequestKeys {
  return { home: { kind, id }, ring: kind === "user" ? userRingKey(id) : id };
}

/**
 * The keys of every request kind. No default case: a new kind fails to compile until it is placed here
 * (the lint gate's switch-exhaustiveness check and the return type both insist).
 */
export function requestKeysOf(request: CellRequest): RequestKeys {
  switch (request.type) {
    case "cell.migrate":
    case "cell.import":
      return homed(request.kind, request.id);
    case "cell.appendMailbox":
    case "cell.mailboxPage":
      return homed("user", request.userId);
    case "cell.send":
    case "cell.openDirect":
    case "cell.createGroup":
    case "cell.addMembers":
    case "cell.history":
    case "cell.messagesAfter":
    case "cell.members":
    case "cell.receipt":
      return homed("conversation", request.conversationId);
    case "cell.stats":
    case "cell.deadLetters":
    case "cell.redriveDeadLetters":
      return { home: undefined, ring: cellStatsRingKey };
    // Any worker answers; the asker's key spreads the asks over the ring.
    case "cell.sharedPeers":
      return { home: undefined, ring: userRingKey(request.userId) };
  }
}

/** The key whose home cell serves a request; undefined for the kinds any worker of a named cell answers. */
export function homeKeyOf(request: CellRequest): HomeKey | undefined {
  return requestKeysOf(request).home;
}

/** The key a request is routed by on its cell's ring: its conversation, for mailbox requests its user. */
export function cellRequestKey(request: CellRequest): string {
  return requestKeysOf(request).ring;
}
