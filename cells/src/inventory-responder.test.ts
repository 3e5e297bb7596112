import { describe, expect, it } from "vitest";
import { answerInventory } from "./inventory-responder.ts";
import { MemoryConversationStore } from "../test/memory-store.ts";
import { joinedEvent } from "../test/store-contract.ts";

const cell = { cellId: "a", weight: 3 };

describe("answerInventory", () => {
  it("pages the cell's mailboxes in id order, says when the last page is reached, and names the cell and its weight", async () => {
    const store = new MemoryConversationStore();
    for (const userId of ["carol", "alice", "bob"])
      await store.appendMailbox({ epoch: 1, userId, eventId: "e-1", event: joinedEvent("hi") });
    const first = await answerInventory(store, cell, { type: "cell.inventory", kind: "user", afterId: "", limit: 2 });
    expect(first).toEqual({
      type: "cell.inventoryPage",
      cellId: "a",
      weight: 3,
      kind: "user",
      keys: [
        { id: "alice", state: "active", movingToCellId: null, movedEpoch: null },
        { id: "bob", state: "active", movingToCellId: null, movedEpoch: null },
      ],
      done: false,
    });
    const second = await answerInventory(store, cell, { type: "cell.inventory", kind: "user", afterId: "bob", limit: 2 });
    expect(second).toMatchObject({ keys: [{ id: "carol" }], done: true });
    // Exactly a page's worth left is still the last page: the extra row read tells.
    expect(await answerInventory(store, cell, { type: "cell.inventory", kind: "user", afterId: "alice", limit: 2 })).toMatchObject({
      done: true,
    });
  });

  it("answers a failing store as any cell request fails (retryable for a database away), not by throwing", async () => {
    const unreachable = Object.assign(new Error("connect ECONNREFUSED"), { code: "ECONNREFUSED" });
    const reply = await answerInventory({ inventory: () => Promise.reject(unreachable) }, cell, {
      type: "cell.inventory",
      kind: "conversation",
      afterId: "",
      limit: 10,
    });
    expect(reply).toMatchObject({ type: "cell.error", code: "cell_unavailable" });
  });
});
