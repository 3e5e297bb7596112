// What each cell request and each directory request is answered with, besides an error (cell.error,
// directory.error) and, for a cell request at a key that moved, cell.moved. One table per wire, as
// client/src/request-kinds.ts has for client frames, so a caller narrows a reply with one typed check
// instead of a hand-written narrow-or-throw block (issue 12).
import type { CellReply, CellRequest, DirectoryReply, DirectoryRequest } from "./cell-messages.ts";

const cellReplyTypes = {
  "cell.send": "cell.stored",
  "cell.openDirect": "cell.conversation",
  "cell.createGroup": "cell.conversation",
  "cell.addMembers": "cell.conversation",
  "cell.history": "cell.historyPage",
  "cell.appendMailbox": "cell.appended",
  "cell.mailboxPage": "cell.mailboxEvents",
  "cell.messagesAfter": "cell.messages",
  "cell.members": "cell.members",
  "cell.sharedPeers": "cell.sharedPeers",
  "cell.receipt": "cell.receipt",
  "cell.migrate": "cell.migrated",
  "cell.import": "cell.imported",
  "cell.stats": "cell.stats",
  "cell.deadLetters": "cell.deadLetters",
  "cell.redriveDeadLetters": "cell.redriven",
} as const satisfies Record<CellRequest["type"], CellReply["type"]>;

/** Every cell request type: the closed set a worker's metrics label requests by. */
export const cellRequestTypes = Object.keys(cellReplyTypes) as readonly CellRequest["type"][];

/** The reply a cell request of type `T` gets when it succeeds. */
export type CellReplyOf<T extends CellRequest["type"]> = Extract<CellReply, { type: (typeof cellReplyTypes)[T] }>;

export function expectedCellReplyType<T extends CellRequest["type"]>(requestType: T): (typeof cellReplyTypes)[T] {
  return cellReplyTypes[requestType];
}

/** Whether `reply` is the success reply of a request of type `requestType`. */
export function isCellReplyOf<T extends CellRequest["type"]>(requestType: T, reply: CellReply): reply is CellReplyOf<T> {
  return reply.type === cellReplyTypes[requestType];
}

const directoryReplyTypes = {
  "directory.resolveUser": "directory.entry",
  "directory.resolveUsers": "directory.entries",
  "directory.assignUser": "directory.entry",
  "directory.lookupUser": "directory.entry",
  "directory.lookupConversation": "directory.entry",
  "directory.placeConversation": "directory.entry",
  "directory.moveEntry": "directory.entry",
  "directory.registerCell": "directory.cells",
  "directory.listCells": "directory.cells",
  "directory.setCellState": "directory.cells",
  "directory.cellEntries": "directory.cellEntries",
} as const satisfies Record<DirectoryRequest["type"], DirectoryReply["type"]>;

/** Every directory request type: the closed set the directory's and its clients' metrics label operations by. */
export const directoryRequestTypes = Object.keys(directoryReplyTypes) as readonly DirectoryRequest["type"][];

/** The reply a directory request of type `T` gets when it succeeds. */
export type DirectoryReplyOf<T extends DirectoryRequest["type"]> = Extract<DirectoryReply, { type: (typeof directoryReplyTypes)[T] }>;

export function expectedDirectoryReplyType<T extends DirectoryRequest["type"]>(requestType: T): (typeof directoryReplyTypes)[T] {
  return directoryReplyTypes[requestType];
}

/** Whether `reply` is the success reply of a directory request of type `requestType`. */
export function isDirectoryReplyOf<T extends DirectoryRequest["type"]>(
  requestType: T,
  reply: DirectoryReply,
): reply is DirectoryReplyOf<T> {
  return reply.type === directoryReplyTypes[requestType];
}
