import { describe, expect, it } from "vitest";
import type { CellReply, DirectoryReply } from "@cellwire/protocol";
import { RemoteError } from "./errors.ts";
import { expectCellReply, expectDirectoryReply } from "./expect-reply.ts";

const pageRequest = { type: "cell.mailboxPage", userId: "bob", afterSeq: 0, limit: 10 } as const;
const events: CellReply = { type: "cell.mailboxEvents", userId: "bob", events: [], headSeq: 3, floorSeq: 0 };

describe("expectCellReply", () => {
  it("returns the reply the request expects, narrowed to its type", () => {
    const reply = expectCellReply(pageRequest, events);
    // Compiles only because the reply is narrowed to cell.mailboxEvents.
    expect(reply.headSeq).toBe(3);
  });

  it("throws a cell.error as RemoteError with its code, message and retryAfterMs", () => {
    const overloaded: CellReply = { type: "cell.error", code: "overloaded", message: "queue full", retryAfterMs: 250 };
    expect(() => expectCellReply(pageRequest, overloaded)).toThrow(
      expect.objectContaining({ name: "RemoteError", code: "overloaded", message: "queue full", retryAfterMs: 250 }),
    );
    const notAMember: CellReply = { type: "cell.error", code: "not_a_member", message: "not a member of g-1" };
    expect(() => expectCellReply(pageRequest, notAMember)).toThrow(
      expect.objectContaining({ code: "not_a_member", message: "not a member of g-1", retryAfterMs: undefined }),
    );
  });

  it("names who answered when told, in a refusal and in a wrong reply", () => {
    const refused: CellReply = { type: "cell.error", code: "cell_unavailable", message: "database down" };
    expect(() => expectCellReply(pageRequest, refused, "cell a")).toThrow(
      expect.objectContaining({ code: "cell_unavailable", message: "cell a refused cell.mailboxPage: database down" }),
    );
    const stats: CellReply = { type: "cell.stats", cellId: "a", users: 0, conversations: 0, outboxRows: 0, frozen: 0 };
    expect(() => expectCellReply(pageRequest, stats, "cell a")).toThrow(
      expect.objectContaining({ code: "internal", message: "cell a answered cell.stats to cell.mailboxPage" }),
    );
  });

  it("throws RemoteError internal for any other reply, a move included", () => {
    const moved: CellReply = { type: "cell.moved", kind: "user", id: "bob", cellId: "b", epoch: 2 };
    expect(() => expectCellReply(pageRequest, moved)).toThrow(RemoteError);
    expect(() => expectCellReply(pageRequest, moved)).toThrow(expect.objectContaining({ code: "internal" }));
    const appended: CellReply = { type: "cell.appended", userId: "bob", seq: 1, deduplicated: false };
    expect(() => expectCellReply(pageRequest, appended)).toThrow(/answered cell.appended to cell.mailboxPage/);
  });
});

describe("expectDirectoryReply", () => {
  const entry: DirectoryReply = { type: "directory.entry", entry: { kind: "user", id: "bob", cellId: "a", epoch: 1 }, placed: false };
  const cells: DirectoryReply = { type: "directory.cells", cells: [{ cellId: "a", weight: 1, state: "active" }] };

  it("returns the reply the request expects, narrowed to its type", () => {
    expect(expectDirectoryReply({ type: "directory.resolveUser" }, entry).entry.cellId).toBe("a");
    expect(expectDirectoryReply({ type: "directory.listCells" }, cells).cells).toHaveLength(1);
  });

  it("throws a directory.error as RemoteError with its code and message, anything else as internal", () => {
    const changed: DirectoryReply = { type: "directory.error", code: "entry_changed", message: "another move won" };
    expect(() => expectDirectoryReply({ type: "directory.moveEntry" }, changed)).toThrow(
      expect.objectContaining({ name: "RemoteError", code: "entry_changed", message: "another move won" }),
    );
    expect(() => expectDirectoryReply({ type: "directory.listCells" }, entry)).toThrow(
      expect.objectContaining({ name: "RemoteError", code: "internal" }),
    );
  });
});
