import { describe, expect, it } from "vitest";
import { StoreRowError } from "./errors.ts";
import { keyRowFromRecord, messageFromRow, safeInteger } from "./postgres-rows.ts";

// The decoders every part of the Postgres store reads its rows with: a row is unknown until one of them
// turns it into a type or a StoreRowError.
describe("postgres-rows", () => {
  it("reads bigint columns that pg returns as strings, and refuses what no JavaScript number holds", () => {
    expect(safeInteger("42", "seq")).toBe(42);
    expect(safeInteger(7, "seq")).toBe(7);
    expect(() => safeInteger("9007199254740993", "seq")).toThrow(StoreRowError);
    expect(() => safeInteger("1e3", "seq")).toThrow(StoreRowError);
  });

  it("decodes a message row through the protocol decoder and refuses one that does not decode", () => {
    const row = {
      conversation_id: "g-ZZZZZZZZZZZZZZZZZZZZZZ",
      message_id: "m-1",
      seq: "3",
      sender_user_id: "alice",
      sender_device_id: "phone",
      client_message_id: "c-1",
      body: "hi",
      sent_at_ms: "1700000000000",
    };
    expect(messageFromRow(row)).toMatchObject({ conversationId: "g-ZZZZZZZZZZZZZZZZZZZZZZ", seq: 3, sentAtMs: 1700000000000 });
    expect(() => messageFromRow({ ...row, body: 5 })).toThrow(StoreRowError);
    expect(() => messageFromRow("not a row")).toThrow(StoreRowError);
  });

  it("reads a key row's state, epochs and target cell", () => {
    expect(keyRowFromRecord({ state: "frozen", owner_epoch: "4", moving_to_cell_id: "cell-b", moved_epoch: null })).toEqual({
      state: "frozen",
      ownerEpoch: 4,
      movingToCellId: "cell-b",
      movedEpoch: null,
    });
    expect(() => keyRowFromRecord({ state: "frozen", owner_epoch: "4", moving_to_cell_id: 3, moved_epoch: null })).toThrow(StoreRowError);
  });
});
