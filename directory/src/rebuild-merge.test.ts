import { describe, expect, it } from "vitest";
import type { InventoryKeyState } from "@cellwire/protocol";
import { mergeInventories, type CellKeyRow } from "./rebuild-merge.ts";

function row(
  cellId: string,
  id: string,
  state: InventoryKeyState,
  moved?: { to: string; epoch: number },
  kind: "user" | "conversation" = "user",
): CellKeyRow {
  return {
    cellId,
    kind,
    key: { id, state, movingToCellId: moved?.to ?? null, movedEpoch: state === "moved" ? (moved?.epoch ?? null) : null },
  };
}

describe("mergeInventories", () => {
  it("homes a key that never moved in the cell holding it, at epoch 1, users and conversations apart", () => {
    const merged = mergeInventories([
      row("a", "alice", "active"),
      row("b", "bob", "active"),
      row("b", "alice", "active", undefined, "conversation"),
    ]);
    expect(merged.entries).toEqual([
      { kind: "user", id: "alice", cellId: "a", epoch: 1 },
      { kind: "user", id: "bob", cellId: "b", epoch: 1 },
      { kind: "conversation", id: "alice", cellId: "b", epoch: 1 },
    ]);
    expect(merged.problems).toEqual([]);
  });

  it("takes the epoch of the newest tombstone: a key moved a to b (2) then back to a (3) is in a at 3", () => {
    const merged = mergeInventories([
      row("a", "alice", "active"),
      row("b", "alice", "moved", { to: "a", epoch: 3 }),
      row("c", "alice", "moved", { to: "b", epoch: 2 }),
    ]);
    expect(merged.entries).toEqual([{ kind: "user", id: "alice", cellId: "a", epoch: 3 }]);
  });

  it("keeps a key frozen in its source (the flip may not have happened) where it is, at the source's epoch", () => {
    const merged = mergeInventories([
      row("a", "alice", "frozen", { to: "b", epoch: 0 }),
      row("b", "alice", "importing"),
      row("c", "alice", "moved", { to: "a", epoch: 4 }),
    ]);
    expect(merged.entries).toEqual([{ kind: "user", id: "alice", cellId: "a", epoch: 4 }]);
  });

  it("homes a key active in the target while the source is still frozen, one epoch past the source's", () => {
    const merged = mergeInventories([row("a", "alice", "frozen", { to: "b", epoch: 0 }), row("b", "alice", "active")]);
    expect(merged.entries).toEqual([{ kind: "user", id: "alice", cellId: "b", epoch: 2 }]);
  });

  it("follows the newest tombstone when no cell holds the key, and reports it", () => {
    const merged = mergeInventories([row("a", "alice", "moved", { to: "b", epoch: 2 }), row("b", "alice", "moved", { to: "c", epoch: 3 })]);
    expect(merged.entries).toEqual([{ kind: "user", id: "alice", cellId: "c", epoch: 3 }]);
    expect(merged.problems).toHaveLength(1);
  });

  it("places nothing for a key that is only importing, and reports it", () => {
    const merged = mergeInventories([row("b", "alice", "importing")]);
    expect(merged.entries).toEqual([]);
    expect(merged.problems).toEqual(["user alice is only importing (in b); left unplaced"]);
  });

  it("settles two active holders on the one the newest tombstone names, and reports it", () => {
    const merged = mergeInventories([
      row("a", "alice", "active"),
      row("c", "alice", "active"),
      row("b", "alice", "moved", { to: "c", epoch: 2 }),
    ]);
    expect(merged.entries).toEqual([{ kind: "user", id: "alice", cellId: "c", epoch: 2 }]);
    expect(merged.problems).toHaveLength(1);
  });
});
