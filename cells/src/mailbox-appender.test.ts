import { describe, expect, it } from "vitest";
import { DirectoryCache, directoryCacheKey, routerDefaults, RemoteError, UnavailableError } from "@cellwire/cluster";
import { mailboxEventId, type CellReply, type CellRequest } from "@cellwire/protocol";
import { MailboxAppender } from "./mailbox-appender.ts";
import { joinedEvent } from "../test/store-contract.ts";
import type { OutboxEntry } from "./store/store.ts";

function entry(recipientUserId: string): OutboxEntry {
  // A joined event: what the outbox carries besides receipts since messages left it.
  const event = joinedEvent("hi");
  return { id: 1, conversationId: event.conversationId, recipientUserId, eventId: mailboxEventId(event), event };
}

function setup(answer: (cellId: string, request: CellRequest) => Promise<CellReply>) {
  const resolved: string[] = [];
  const sent: [string, CellRequest][] = [];
  const waitsMs: number[] = [];
  let nowMs = 0;
  // The worker's options (worker-parts.ts): a change for a user not held is kept.
  const homeCells = new DirectoryCache({
    entriesMax: 10,
    ttlMs: Infinity,
    nowMs: () => nowMs,
    fetchesInFlightMax: 10,
    changesOfUncachedKeys: "keep",
  });
  const homes = new Map([
    ["bob", "b"],
    ["carol", "c"],
  ]);
  const appender = new MailboxAppender(
    {
      resolveUser: async (userId) => {
        resolved.push(userId);
        return { entry: { cellId: homes.get(userId) ?? "a", epoch: 1 } };
      },
    },
    {
      request: (cellId, request) => {
        sent.push([cellId, request]);
        return answer(cellId, request);
      },
    },
    homeCells,
    {
      options: { ...routerDefaults, deadlineMs: 1000 },
      dependencies: {
        monotonicNowMs: () => nowMs,
        random: () => 1,
        sleep: async (ms) => {
          waitsMs.push(ms);
          nowMs += ms;
        },
      },
    },
  );
  return { appender, resolved, sent, homes, homeCells, waitsMs };
}

describe("MailboxAppender", () => {
  it("sends cell.appendMailbox to the recipient's home cell, resolving each user once while it answers", async () => {
    const { appender, resolved, sent } = setup(async (_cellId, request) =>
      request.type === "cell.appendMailbox"
        ? { type: "cell.appended", userId: request.userId, seq: 7, deduplicated: false }
        : { type: "cell.error", code: "internal", message: "?" },
    );
    const first = entry("bob");
    expect(await appender.append(first)).toBe(7);
    expect(await appender.append(entry("bob"))).toBe(7);
    expect(await appender.append(entry("carol"))).toBe(7);
    expect(resolved).toEqual(["bob", "carol"]);
    expect(sent[0]).toEqual(["b", { type: "cell.appendMailbox", userId: "bob", eventId: first.eventId, event: first.event }]);
    expect(sent.map(([cellId]) => cellId)).toEqual(["b", "b", "c"]);
  });

  it("throws on an error reply or silence, and asks the directory again next time", async () => {
    let reply: "error" | "silence" | "ok" = "error";
    const { appender, resolved, homes } = setup(async (_cellId, request) => {
      if (reply === "silence") throw new UnavailableError("cell_unavailable", "no reply");
      if (reply === "error" || request.type !== "cell.appendMailbox")
        return { type: "cell.error", code: "cell_unavailable", message: "database down" };
      return { type: "cell.appended", userId: request.userId, seq: 1, deduplicated: true };
    });
    await expect(appender.append(entry("bob"))).rejects.toThrow(RemoteError);
    reply = "silence";
    await expect(appender.append(entry("bob"))).rejects.toThrow(UnavailableError);
    reply = "ok";
    homes.set("bob", "z");
    expect(await appender.append(entry("bob"))).toBe(1);
    expect(resolved).toEqual(["bob", "bob", "bob"]);
  });

  it("throws overloaded, with its code, when the mailbox owner is at capacity, so the relay keeps the row for a later sweep", async () => {
    const { appender, sent } = setup(async () => ({
      type: "cell.error",
      code: "overloaded",
      message: "too many requests pending",
      retryAfterMs: 200,
    }));
    await expect(appender.append(entry("bob"))).rejects.toMatchObject({ name: "RemoteError", code: "overloaded" });
    // Not retried in place: the relay's retry delay spaces the next attempt.
    expect(sent).toHaveLength(1);
  });

  it("keeps the owner's retryAfterMs and names the cell that refused (expectCellReply)", async () => {
    const { appender } = setup(async () => ({ type: "cell.error", code: "overloaded", message: "queue full", retryAfterMs: 200 }));
    await expect(appender.append(entry("bob"))).rejects.toMatchObject({
      code: "overloaded",
      retryAfterMs: 200,
      message: expect.stringMatching(/^cell \S+ refused cell.appendMailbox: queue full$/),
    });
  });

  it("does not take an appended reply for another user as success", async () => {
    const { appender } = setup(async () => ({ type: "cell.appended", userId: "mallory", seq: 3, deduplicated: false }));
    await expect(appender.append(entry("bob"))).rejects.toThrow(/answered cell.appended/);
  });

  it("follows a recipient whose mailbox moved, and keeps the new home for the next event", async () => {
    const { appender, resolved, sent, homeCells } = setup(async (cellId, request) => {
      if (request.type !== "cell.appendMailbox") throw new Error("routed wrongly");
      if (cellId === "b") return { type: "cell.moved", kind: "user", id: request.userId, cellId: "d", epoch: 2 };
      return { type: "cell.appended", userId: request.userId, seq: 9, deduplicated: false };
    });
    expect(await appender.append(entry("bob"))).toBe(9);
    expect(await appender.append(entry("bob"))).toBe(9);
    expect(sent.map(([cellId]) => cellId)).toEqual(["b", "d", "d"]);
    expect(resolved).toEqual(["bob"]);
    expect(homeCells.peek(directoryCacheKey("user", "bob"))).toMatchObject({ cellId: "d", epoch: 2 });
  });

  it("keeps a newer home learnt from directory.changed when the held one answers a stale cell.moved", async () => {
    const { appender, resolved, sent, homeCells } = setup(async (cellId, request) => {
      if (request.type !== "cell.appendMailbox") throw new Error("routed wrongly");
      if (cellId === "b") {
        // The directory.changed of the move arrives while cell b answers with a tombstone it cannot place.
        homeCells.changed({ kind: "user", id: "bob", cellId: "d", epoch: 3 });
        return { type: "cell.moved", kind: "user", id: request.userId, cellId: "b", epoch: 1 };
      }
      return { type: "cell.appended", userId: request.userId, seq: 5, deduplicated: false };
    });
    expect(await appender.append(entry("bob"))).toBe(5);
    // Only the epoch-1 home that led nowhere was dropped: the next attempt went to d without a lookup.
    expect(sent.map(([cellId]) => cellId)).toEqual(["b", "d"]);
    expect(resolved).toEqual(["bob"]);
  });

  it("waits out a mailbox frozen for a move, then appends", async () => {
    let calls = 0;
    const { appender, waitsMs } = setup(async (_cellId, request) => {
      calls++;
      if (calls <= 2 || request.type !== "cell.appendMailbox") return { type: "cell.error", code: "moving", message: "frozen" };
      return { type: "cell.appended", userId: request.userId, seq: 4, deduplicated: false };
    });
    expect(await appender.append(entry("bob"))).toBe(4);
    expect(waitsMs).toEqual([10, 20]);
  });

  it("throws cell_unavailable when the mailbox is still moving at the deadline, so the relay keeps the row", async () => {
    const { appender, resolved, waitsMs } = setup(async () => ({ type: "cell.error", code: "moving", message: "frozen" }));
    await expect(appender.append(entry("bob"))).rejects.toMatchObject({ name: "UnavailableError", code: "cell_unavailable" });
    expect(waitsMs.reduce((sum, ms) => sum + ms, 0)).toBe(1000);
    // The home is asked of the directory again next time.
    await expect(appender.append(entry("bob"))).rejects.toThrow(UnavailableError);
    expect(resolved).toEqual(["bob", "bob"]);
  });
});
