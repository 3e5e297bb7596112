import { describe, expect, it } from "vitest";
import type { CellRequest } from "./cell-messages.ts";
import { cellRequestKey, cellStatsRingKey, homeKeyOf, requestKeysOf, ringKeyOf, userRingKey, type RequestKeys } from "./request-keys.ts";

const joined = {
  kind: "joined",
  conversationId: "g-1",
  conversationKind: "group",
  title: "t",
  afterSeq: 0,
  addedByUserId: "alice",
} as const;

/** One request of every kind with the keys it must have; typed by kind, so a new kind without a row fails to compile. */
const cases: { readonly [K in CellRequest["type"]]: { readonly request: Extract<CellRequest, { type: K }>; readonly keys: RequestKeys } } =
  {
    "cell.send": {
      request: { type: "cell.send", senderUserId: "alice", senderDeviceId: "d", conversationId: "g-1", clientMessageId: "c", body: "b" },
      keys: { home: { kind: "conversation", id: "g-1" }, ring: "g-1" },
    },
    "cell.openDirect": {
      request: { type: "cell.openDirect", userId: "alice", peerUserId: "bob", conversationId: "d-1" },
      keys: { home: { kind: "conversation", id: "d-1" }, ring: "d-1" },
    },
    "cell.createGroup": {
      request: { type: "cell.createGroup", creatorUserId: "alice", conversationId: "g-2", title: "t", memberUserIds: [] },
      keys: { home: { kind: "conversation", id: "g-2" }, ring: "g-2" },
    },
    "cell.addMembers": {
      request: { type: "cell.addMembers", userId: "alice", conversationId: "g-3", userIds: ["bob"] },
      keys: { home: { kind: "conversation", id: "g-3" }, ring: "g-3" },
    },
    "cell.history": {
      request: { type: "cell.history", userId: "alice", conversationId: "g-4", beforeSeq: null, limit: 5 },
      keys: { home: { kind: "conversation", id: "g-4" }, ring: "g-4" },
    },
    // A read of a conversation's log goes to the conversation's home, whoever asks.
    "cell.messagesAfter": {
      request: { type: "cell.messagesAfter", userId: "bob", conversationId: "g-5", afterSeq: null, limit: 5 },
      keys: { home: { kind: "conversation", id: "g-5" }, ring: "g-5" },
    },
    "cell.members": {
      request: { type: "cell.members", conversationId: "g-6", userId: "alice" },
      keys: { home: { kind: "conversation", id: "g-6" }, ring: "g-6" },
    },
    "cell.receipt": {
      request: { type: "cell.receipt", userId: "alice", conversationId: "g-7", position: "read", seq: 3 },
      keys: { home: { kind: "conversation", id: "g-7" }, ring: "g-7" },
    },
    "cell.appendMailbox": {
      request: { type: "cell.appendMailbox", userId: "bob", eventId: "joined-g-1", event: joined },
      keys: { home: { kind: "user", id: "bob" }, ring: "user:bob" },
    },
    "cell.mailboxPage": {
      request: { type: "cell.mailboxPage", userId: "carol", afterSeq: 0, limit: 10 },
      keys: { home: { kind: "user", id: "carol" }, ring: "user:carol" },
    },
    "cell.migrate": {
      request: { type: "cell.migrate", kind: "user", id: "dave", toCellId: "b" },
      keys: { home: { kind: "user", id: "dave" }, ring: "user:dave" },
    },
    "cell.import": {
      request: {
        type: "cell.import",
        kind: "conversation",
        id: "g-8",
        fromCellId: "a",
        first: true,
        last: false,
        lastSeq: 0,
        conversation: null,
        members: [],
        messages: [],
        outbox: [],
      },
      keys: { home: { kind: "conversation", id: "g-8" }, ring: "g-8" },
    },
    // Any worker of the asked cell answers these: no home key; the ring still picks one worker.
    "cell.stats": { request: { type: "cell.stats" }, keys: { home: undefined, ring: cellStatsRingKey } },
    "cell.deadLetters": { request: { type: "cell.deadLetters", afterId: 0, limit: 10 }, keys: { home: undefined, ring: cellStatsRingKey } },
    "cell.redriveDeadLetters": {
      request: { type: "cell.redriveDeadLetters", ids: [1] },
      keys: { home: undefined, ring: cellStatsRingKey },
    },
    "cell.sharedPeers": {
      request: { type: "cell.sharedPeers", userId: "erin", peerUserIds: ["bob"] },
      keys: { home: undefined, ring: "user:erin" },
    },
  };

describe("requestKeysOf", () => {
  for (const [type, { request, keys }] of Object.entries(cases)) {
    it(`names the home key and ring key of ${type}`, () => {
      expect(requestKeysOf(request)).toEqual(keys);
      expect(homeKeyOf(request)).toEqual(keys.home);
      expect(cellRequestKey(request)).toBe(keys.ring);
      // A homed request's ring key is its home key's: the router and migration agree on the owner.
      if (keys.home !== undefined) expect(ringKeyOf(keys.home)).toBe(keys.ring);
    });
  }

  it("keeps user ring keys apart from conversation ids and from the cell-wide key", () => {
    expect(ringKeyOf({ kind: "user", id: "g-1" })).toBe(userRingKey("g-1"));
    expect(ringKeyOf({ kind: "user", id: "g-1" })).not.toBe(ringKeyOf({ kind: "conversation", id: "g-1" }));
    expect(cellStatsRingKey).not.toMatch(/^user:/);
  });
});
