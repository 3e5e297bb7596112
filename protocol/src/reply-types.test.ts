import { describe, expect, it } from "vitest";
import type { CellReply, CellRequest, DirectoryReply, DirectoryRequest } from "./cell-messages.ts";
import { expectedCellReplyType, expectedDirectoryReplyType, isCellReplyOf, isDirectoryReplyOf } from "./reply-types.ts";

// Every request kind, typed by kind so that a new kind without a row here fails to compile.
const cellReplies: { readonly [K in CellRequest["type"]]: CellReply["type"] } = {
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
};
const directoryReplies: { readonly [K in DirectoryRequest["type"]]: DirectoryReply["type"] } = {
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
};

const errorReply: CellReply = { type: "cell.error", code: "internal", message: "x" };
const movedReply: CellReply = { type: "cell.moved", kind: "user", id: "bob", cellId: "b", epoch: 2 };

describe("the cell request-to-reply table", () => {
  for (const [requestType, replyType] of Object.entries(cellReplies) as [CellRequest["type"], CellReply["type"]][]) {
    it(`answers ${requestType} with ${replyType}, never with an error or a move`, () => {
      expect(expectedCellReplyType(requestType)).toBe(replyType);
      // Only the type is read: a reply of the expected type passes whatever its fields.
      expect(isCellReplyOf(requestType, { type: replyType } as CellReply)).toBe(true);
      expect(isCellReplyOf(requestType, errorReply)).toBe(false);
      expect(isCellReplyOf(requestType, movedReply)).toBe(false);
    });
  }

  it("tells apart a request and a reply that share a type name from their neighbours", () => {
    expect(isCellReplyOf("cell.members", { type: "cell.conversation" } as CellReply)).toBe(false);
    expect(isCellReplyOf("cell.openDirect", { type: "cell.conversation" } as CellReply)).toBe(true);
  });
});

describe("the directory request-to-reply table", () => {
  for (const [requestType, replyType] of Object.entries(directoryReplies) as [DirectoryRequest["type"], DirectoryReply["type"]][]) {
    it(`answers ${requestType} with ${replyType}`, () => {
      expect(expectedDirectoryReplyType(requestType)).toBe(replyType);
      expect(isDirectoryReplyOf(requestType, { type: replyType } as DirectoryReply)).toBe(true);
      expect(isDirectoryReplyOf(requestType, { type: "directory.error", code: "not_found", message: "x" })).toBe(false);
    });
  }
});
