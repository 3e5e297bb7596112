import { describe, expect, it } from "vitest";
import { RemoteError, UnavailableError } from "@cellwire/cluster";
import { mailboxEventId, messageOf, type CellReply, type CellRequest } from "@cellwire/protocol";
import { BoundedCache } from "./bounded-cache.ts";
import { MailboxAppender } from "./mailbox-appender.ts";
import { messageEvent } from "./store/store-contract.ts";
import type { OutboxEntry } from "./store/store.ts";

function entry(recipientUserId: string): OutboxEntry {
  const event = messageEvent("hi");
  return { id: 1, conversationId: messageOf(event)?.conversationId ?? "", recipientUserId, eventId: mailboxEventId(event), event };
}

function setup(answer: (cellId: string, request: CellRequest) => Promise<CellReply>) {
  const resolved: string[] = [];
  const sent: [string, CellRequest][] = [];
  const homes = new Map([
    ["bob", "b"],
    ["carol", "c"],
  ]);
  const appender = new MailboxAppender(
    {
      resolveUser: async (userId) => {
        resolved.push(userId);
        return { entry: { cellId: homes.get(userId) ?? "a" } };
      },
    },
    {
      request: (cellId, request) => {
        sent.push([cellId, request]);
        return answer(cellId, request);
      },
    },
    new BoundedCache<string>(10),
  );
  return { appender, resolved, sent, homes };
}

describe("MailboxAppender", () => {
  it("sends cell.appendMailbox to the recipient's home cell, resolving each user once while it answers", async () => {
    const { appender, resolved, sent } = setup(async (_cellId, request) =>
      request.type === "cell.appendMailbox" ? { type: "cell.appended", userId: request.userId, seq: 7, deduplicated: false } : { type: "cell.error", code: "internal", message: "?" },
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
      if (reply === "error" || request.type !== "cell.appendMailbox") return { type: "cell.error", code: "cell_unavailable", message: "database down" };
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

  it("does not take an appended reply for another user as success", async () => {
    const { appender } = setup(async () => ({ type: "cell.appended", userId: "mallory", seq: 3, deduplicated: false }));
    await expect(appender.append(entry("bob"))).rejects.toThrow(/answered cell.appended/);
  });
});
