import { describe, expect, it } from "vitest";
import type { CellReply, CellRequest } from "@cellwire/protocol";
import { EveryoneVisible, SharedConversationAccess } from "./presence-access.ts";

const ttlMs = 1000;

/** Cells answering cell.sharedPeers from their own conversations (member lists), with a controllable clock. */
function access(cells: Record<string, readonly (readonly string[])[]>, options: { pairsMax?: number } = {}) {
  let nowMs = 0;
  const asked: { cellId: string; request: CellRequest }[] = [];
  const failing = new Set<string>();
  let listings = 0;
  const warnings: string[] = [];
  const subject = new SharedConversationAccess(
    { pairsMax: options.pairsMax ?? 100, ttlMs },
    {
      listCellIds: async () => {
        listings += 1;
        return Object.keys(cells);
      },
      requestCell: async (cellId, request): Promise<CellReply> => {
        asked.push({ cellId, request });
        if (failing.has(cellId)) throw new Error(`cell ${cellId} is down`);
        if (request.type !== "cell.sharedPeers") throw new Error("asked something else");
        const conversations = (cells[cellId] ?? []).filter((members) => members.includes(request.userId));
        const peerUserIds = request.peerUserIds.filter((peer) => conversations.some((members) => members.includes(peer)));
        return { type: "cell.sharedPeers", userId: request.userId, peerUserIds };
      },
      nowMs: () => nowMs,
      warn: (message) => warnings.push(message),
    },
  );
  return {
    subject,
    asked,
    failing,
    warnings,
    get listings() {
      return listings;
    },
    advance(ms: number) {
      nowMs += ms;
    },
  };
}

const sorted = (set: ReadonlySet<string>): string[] => [...set].sort();

describe("SharedConversationAccess", () => {
  it("lets a watcher see the users of its conversations in any cell, itself, and no one else", async () => {
    const { subject, asked } = access({
      a: [["alice", "bob"]],
      b: [
        ["alice", "carol", "dave"],
        ["erin", "frank"],
      ],
    });
    expect(sorted(await subject.visible("alice", ["bob", "carol", "erin", "alice", "zed"]))).toEqual(["alice", "bob", "carol"]);
    // One request per cell for the whole watch, never about the watcher themself.
    expect(asked).toEqual([
      { cellId: "a", request: { type: "cell.sharedPeers", userId: "alice", peerUserIds: ["bob", "carol", "erin", "zed"] } },
      { cellId: "b", request: { type: "cell.sharedPeers", userId: "alice", peerUserIds: ["bob", "carol", "erin", "zed"] } },
    ]);
    expect(sorted(await subject.visible("erin", ["alice", "frank"]))).toEqual(["frank"]);
  });

  it("remembers both answers for less than ttlMs, then asks again: a conversation made since lets the watcher see", async () => {
    const cells: Record<string, string[][]> = { a: [["alice", "bob"]] };
    const world = access(cells);
    expect(sorted(await world.subject.visible("alice", ["bob", "carol"]))).toEqual(["bob"]);
    cells["a"]?.push(["alice", "carol"]);
    world.advance(ttlMs - 1);
    expect(sorted(await world.subject.visible("alice", ["bob", "carol"]))).toEqual(["bob"]);
    expect(world.asked).toHaveLength(1);
    expect(world.listings).toBe(1);
    world.advance(1);
    expect(sorted(await world.subject.visible("alice", ["bob", "carol"]))).toEqual(["bob", "carol"]);
    expect(world.asked).toHaveLength(2);
    expect(world.listings).toBe(2);
  });

  it("fails closed when a cell does not answer, and does not remember that cell's silence as a no", async () => {
    const world = access({ a: [["alice", "bob"]], b: [["alice", "carol"]] });
    world.failing.add("b");
    expect(sorted(await world.subject.visible("alice", ["bob", "carol"]))).toEqual(["bob"]);
    expect(world.warnings).toHaveLength(1);
    world.failing.delete("b");
    expect(sorted(await world.subject.visible("alice", ["bob", "carol"]))).toEqual(["bob", "carol"]);
    // bob's yes was remembered: only carol was asked about again.
    expect(world.asked.slice(2).map((entry) => entry.request)).toEqual([
      { type: "cell.sharedPeers", userId: "alice", peerUserIds: ["carol"] },
      { type: "cell.sharedPeers", userId: "alice", peerUserIds: ["carol"] },
    ]);
  });

  it("takes from a cell's answer only the users it was asked about", async () => {
    const subject = new SharedConversationAccess(
      { pairsMax: 10, ttlMs },
      {
        listCellIds: async () => ["a"],
        requestCell: async (): Promise<CellReply> => ({ type: "cell.sharedPeers", userId: "alice", peerUserIds: ["bob", "mallory"] }),
        nowMs: () => 0,
        warn: () => undefined,
      },
    );
    expect(sorted(await subject.visible("alice", ["bob"]))).toEqual(["bob"]);
    expect(subject.rememberedPairCount).toBe(1);
  });

  it("keeps at most pairsMax answers", async () => {
    const world = access({ a: [["alice", "u1", "u2", "u3", "u4"]] }, { pairsMax: 2 });
    await world.subject.visible("alice", ["u1", "u2", "u3", "u4"]);
    expect(world.subject.rememberedPairCount).toBe(2);
  });
});

describe("EveryoneVisible", () => {
  it("lets anyone watch anyone", async () => {
    expect(sorted(await new EveryoneVisible().visible("alice", ["bob", "zed"]))).toEqual(["bob", "zed"]);
  });
});
