// Typing and presence through EdgeCore, in process: sessions on fake sockets, member lists from a fake
// cell, typing deliveries through the in-memory delivery source, presence from the real PresenceTable
// with a fake clock. No timing assumption beyond waiting for events.
import { afterEach, describe, expect, it, vi } from "vitest";
import { UnavailableError } from "@cellwire/cluster";
import { errorCodes, presenceWatchUsersMax, type CellReply, type CellRequest } from "@cellwire/protocol";
import { SharedConversationAccess } from "./presence/presence-access.ts";
import {
  deferred,
  fakeEdge,
  framesOfType,
  memberCacheTtlMsForTests,
  typingExpiresInMsForTests,
  type FakeEdge,
  type FakeTransport,
} from "../test/edge-fakes.ts";

const groupId = "g-AAAAAAAAAAAAAAAAAAAAAA";
const otherGroupId = "g-BBBBBBBBBBBBBBBBBBBBBB";
const unknownGroupId = "g-ZZZZZZZZZZZZZZZZZZZZZZ";

const edges: FakeEdge[] = [];

function newEdge(...args: Parameters<typeof fakeEdge>): FakeEdge {
  const edge = fakeEdge(...args);
  edges.push(edge);
  return edge;
}

afterEach(() => {
  const violations = edges.flatMap((edge) => edge.transports.flatMap((transport) => transport.violations));
  for (const edge of edges.splice(0)) edge.core.closeAll();
  expect(violations).toEqual([]);
});

function settle(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}

/** Groups of cell "a" whose owner answers cell.members with `members` (or not_a_member for others). */
function edgeWithGroups(members: Record<string, readonly string[]>, ...args: Parameters<typeof fakeEdge>): FakeEdge {
  const edge = newEdge(...args);
  for (const conversationId of Object.keys(members))
    edge.directory.conversations.set(conversationId, { kind: "conversation", id: conversationId, cellId: "a", epoch: 1 });
  edge.router.answers.set("cell.members", async (_cellId, request) => {
    if (request.type !== "cell.members") throw new Error("routed wrongly");
    const list = members[request.conversationId];
    if (list === undefined || !list.includes(request.userId)) return { type: "cell.error", code: "not_a_member", message: "not a member" };
    return { type: "cell.members", conversationId: request.conversationId, memberUserIds: [...list] };
  });
  return edge;
}

async function device(edge: FakeEdge, userId: string, deviceId: string): Promise<FakeTransport> {
  const { transport } = await edge.authenticated(userId, { token: `valid:${userId}:${deviceId}` });
  await transport.frame((frame) => frame["type"] === "synced");
  return transport;
}

function typing(requestId: string, conversationId = groupId): Record<string, unknown> {
  return { type: "typing", requestId, conversationId };
}

async function reply(transport: FakeTransport, requestId: string): Promise<Record<string, unknown>> {
  return transport.frame((frame) => frame["requestId"] === requestId);
}

describe("typing", () => {
  it("reaches every other member's devices and the typist's other devices, not the device that typed", async () => {
    const edge = edgeWithGroups({ [groupId]: ["alice", "bob", "carol"] });
    const alicePhone = await device(edge, "alice", "phone");
    const aliceLaptop = await device(edge, "alice", "laptop");
    const bob = await device(edge, "bob", "tablet");
    const dave = await device(edge, "dave", "phone");
    alicePhone.receiveJson(typing("t1"));
    expect(await reply(alicePhone, "t1")).toEqual({ type: "typingAck", requestId: "t1" });
    const indicator = {
      type: "typing",
      conversationId: groupId,
      userId: "alice",
      deviceId: "phone",
      expiresInMs: typingExpiresInMsForTests,
    };
    expect(framesOfType(bob, "typing")).toEqual([indicator]);
    expect(framesOfType(aliceLaptop, "typing")).toEqual([indicator]);
    expect(framesOfType(alicePhone, "typing")).toEqual([]);
    expect(framesOfType(dave, "typing")).toEqual([]);
    // One publish with every member as a recipient, carol (connected nowhere here) included: her edges forward it.
    expect(edge.deliveries.typingPublished).toEqual([
      {
        recipientUserIds: ["alice", "bob", "carol"],
        indicator: { conversationId: groupId, userId: "alice", deviceId: "phone", expiresInMs: typingExpiresInMsForTests },
      },
    ]);
    expect(edge.router.requestsOf("cell.members")).toEqual([{ type: "cell.members", conversationId: groupId, userId: "alice" }]);
  });

  it("asks the cell for the member list once and then serves from the cache until it ages out", async () => {
    const edge = edgeWithGroups({ [groupId]: ["alice", "bob"] });
    const alice = await device(edge, "alice", "phone");
    const bob = await device(edge, "bob", "phone");
    alice.receiveJson(typing("t1"));
    await reply(alice, "t1");
    edge.clock.advance(1000);
    bob.receiveJson(typing("t2"));
    expect(await reply(bob, "t2")).toEqual({ type: "typingAck", requestId: "t2" });
    expect(edge.router.requestsOf("cell.members")).toHaveLength(1);
    edge.clock.advance(memberCacheTtlMsForTests + 1);
    alice.receiveJson(typing("t3"));
    await reply(alice, "t3");
    expect(edge.router.requestsOf("cell.members")).toHaveLength(2);
  });

  it("learns the member list from a conversation reply it relays, without asking the cell", async () => {
    const edge = edgeWithGroups({});
    edge.router.answers.set("cell.createGroup", async (_cellId, request) => {
      if (request.type !== "cell.createGroup") throw new Error("routed wrongly");
      return {
        type: "cell.conversation",
        conversation: {
          conversationId: request.conversationId,
          kind: "group",
          title: request.title,
          memberUserIds: ["alice", "bob"],
          lastSeq: 0,
        },
      };
    });
    const alice = await device(edge, "alice", "phone");
    const bob = await device(edge, "bob", "phone");
    alice.receiveJson({ type: "createGroup", requestId: "g1", title: "pair", memberUserIds: ["bob"] });
    const created = await reply(alice, "g1");
    const conversationId = (created["conversation"] as { conversationId: string }).conversationId;
    alice.receiveJson(typing("t1", conversationId));
    expect(await reply(alice, "t1")).toEqual({ type: "typingAck", requestId: "t1" });
    expect(framesOfType(bob, "typing")).toHaveLength(1);
    expect(edge.router.requestsOf("cell.members")).toEqual([]);
  });

  it("refuses a non-member with not_a_member, sending nothing: unknown conversation, cell refusal, cached list", async () => {
    const edge = edgeWithGroups({ [groupId]: ["alice", "bob"] });
    const mallory = await device(edge, "mallory", "phone");
    const bob = await device(edge, "bob", "phone");
    mallory.receiveJson(typing("t1", unknownGroupId));
    expect(await reply(mallory, "t1")).toEqual({
      type: "error",
      requestId: "t1",
      code: "not_a_member",
      message: expect.any(String),
      retryable: false,
    });
    expect(edge.router.requestsOf("cell.members")).toEqual([]);
    mallory.receiveJson(typing("t2"));
    expect(await reply(mallory, "t2")).toMatchObject({ type: "error", code: "not_a_member", retryable: false });
    expect(edge.router.requestsOf("cell.members")).toHaveLength(1);
    // Once a member's typing cached the list, a non-member is refused from the cache.
    bob.receiveJson(typing("t3"));
    await reply(bob, "t3");
    edge.clock.advance(1000);
    mallory.receiveJson(typing("t4"));
    expect(await reply(mallory, "t4")).toMatchObject({ type: "error", code: "not_a_member" });
    expect(edge.router.requestsOf("cell.members")).toHaveLength(2);
    expect(edge.deliveries.typingPublished.map((entry) => entry.indicator.userId)).toEqual(["bob"]);
    expect(framesOfType(bob, "typing")).toEqual([]);
  });

  it("answers rate_limited, with the wait as retryAfterMs, to a second typing within typingIntervalMs, and takes one again at the interval", async () => {
    const edge = edgeWithGroups({ [groupId]: ["alice", "bob"], [otherGroupId]: ["alice", "bob"] });
    const alice = await device(edge, "alice", "phone");
    alice.receiveJson(typing("t1"));
    alice.receiveJson(typing("t2"));
    expect(await reply(alice, "t2")).toEqual({
      type: "error",
      requestId: "t2",
      code: "rate_limited",
      message: expect.stringContaining("1000 ms"),
      retryable: true,
      retryAfterMs: 1000,
    });
    expect(await reply(alice, "t1")).toEqual({ type: "typingAck", requestId: "t1" });
    // Another conversation has its own allowance.
    alice.receiveJson(typing("t3", otherGroupId));
    expect(await reply(alice, "t3")).toEqual({ type: "typingAck", requestId: "t3" });
    edge.clock.advance(999);
    alice.receiveJson(typing("t4"));
    expect(await reply(alice, "t4")).toMatchObject({ code: "rate_limited", retryAfterMs: 1 });
    edge.clock.advance(1);
    alice.receiveJson(typing("t5"));
    expect(await reply(alice, "t5")).toEqual({ type: "typingAck", requestId: "t5" });
    expect(edge.deliveries.typingPublished).toHaveLength(3);
  });

  it("limits the conversations a session types in at once, and the limit is per session", async () => {
    const edge = edgeWithGroups({ [groupId]: ["alice"], [otherGroupId]: ["alice"] }, { typingConversationsPerSessionMax: 1 });
    const phone = await device(edge, "alice", "phone");
    const laptop = await device(edge, "alice", "laptop");
    phone.receiveJson(typing("t1"));
    phone.receiveJson(typing("t2", otherGroupId));
    laptop.receiveJson(typing("t3"));
    expect(await reply(phone, "t2")).toMatchObject({ code: "rate_limited", message: expect.stringContaining("1 conversations") });
    expect(await reply(phone, "t1")).toMatchObject({ type: "typingAck" });
    expect(await reply(laptop, "t3")).toMatchObject({ type: "typingAck" });
  });

  it("maps the cell's failures: a retryable cell error, an unreachable cell, and an unexpected error logged, not shown", async () => {
    const edge = edgeWithGroups({ [groupId]: ["alice", "bob"] });
    const alice = await device(edge, "alice", "phone");
    edge.router.answers.set("cell.members", async () => ({ type: "cell.error", code: "not_owner", message: "worker a-2 owns it" }));
    alice.receiveJson(typing("t1"));
    expect(await reply(alice, "t1")).toMatchObject({ type: "error", code: "cell_unavailable", retryable: true });
    edge.clock.advance(1000);
    edge.router.answers.set("cell.members", () => Promise.reject(new UnavailableError("cell_unavailable", "cell a did not answer")));
    alice.receiveJson(typing("t2"));
    expect(await reply(alice, "t2")).toMatchObject({
      type: "error",
      code: "cell_unavailable",
      message: errorCodes.cell_unavailable.description,
    });
    edge.clock.advance(1000);
    edge.router.answers.set("cell.members", async () => ({
      type: "cell.historyPage",
      conversationId: groupId,
      messages: [],
      hasMore: false,
    }));
    alice.receiveJson(typing("t3"));
    expect(await reply(alice, "t3")).toEqual({
      type: "error",
      requestId: "t3",
      code: "internal",
      message: "internal error",
      retryable: true,
    });
    expect(edge.logger.lines.some((line) => line.level === "error" && line.message.includes("cell.historyPage"))).toBe(true);
    expect(edge.deliveries.typingPublished).toEqual([]);
  });

  it("shares one cell.members request between typists who miss the cache at the same time", async () => {
    const edge = edgeWithGroups({ [groupId]: ["alice"] });
    const answer = deferred<CellReply>();
    const asked: CellRequest[] = [];
    edge.router.answers.set("cell.members", (_cellId, request) => {
      asked.push(request);
      return answer.promise;
    });
    const phone = await device(edge, "alice", "phone");
    const laptop = await device(edge, "alice", "laptop");
    phone.receiveJson(typing("t1"));
    laptop.receiveJson(typing("t2"));
    await vi.waitFor(() => expect(asked).toHaveLength(1));
    answer.resolve({ type: "cell.members", conversationId: groupId, memberUserIds: ["alice"] });
    expect(await reply(phone, "t1")).toMatchObject({ type: "typingAck" });
    expect(await reply(laptop, "t2")).toMatchObject({ type: "typingAck" });
    expect(asked).toHaveLength(1);
  });

  it("writes an indicator to no session that has closed, and an arriving indicator reaches every other device", async () => {
    const edge = edgeWithGroups({ [groupId]: ["alice", "bob"] });
    const bob = await device(edge, "bob", "phone");
    const bobLaptop = await device(edge, "bob", "laptop");
    const written = bob.texts.length;
    bob.peerClose();
    // From alice's phone on another edge, to every member: alice has no session here.
    edge.deliveries.publishBatch({
      type: "delivery.batch",
      messages: [],
      events: [],
      typing: [{ recipientUserIds: ["alice", "bob"], conversationId: groupId, userId: "alice", deviceId: "phone", expiresInMs: 5000 }],
    });
    expect(bob.texts).toHaveLength(written);
    expect(framesOfType(bobLaptop, "typing")).toHaveLength(1);
  });
});

describe("presence", () => {
  function watch(transport: FakeTransport, requestId: string, userIds: string[]): void {
    transport.receiveJson({ type: "watchPresence", requestId, userIds });
  }

  it("answers watchPresence with each user's state, in the order asked", async () => {
    const edge = newEdge();
    const bob = await device(edge, "bob", "phone");
    const onlineAtMs = edge.clock.wallMs;
    edge.clock.advance(50);
    const alice = await device(edge, "alice", "phone");
    watch(alice, "w1", ["carol", "bob", "alice"]);
    expect(await reply(alice, "w1")).toEqual({
      type: "presenceSnapshot",
      requestId: "w1",
      users: [
        { userId: "carol", status: "offline", changedAtMs: null },
        { userId: "bob", status: "online", changedAtMs: onlineAtMs },
        { userId: "alice", status: "online", changedAtMs: edge.clock.wallMs },
      ],
    });
    expect(bob.isOpen).toBe(true);
  });

  it("tells a watcher when a user's first session opens and the last one closes, not in between", async () => {
    const edge = newEdge();
    const alice = await device(edge, "alice", "phone");
    watch(alice, "w1", ["bob"]);
    await reply(alice, "w1");
    const phone = await device(edge, "bob", "phone");
    const laptop = await device(edge, "bob", "laptop");
    expect(framesOfType(alice, "presence")).toEqual([
      { type: "presence", userId: "bob", status: "online", changedAtMs: edge.clock.wallMs },
    ]);
    edge.clock.advance(10);
    phone.peerClose();
    expect(framesOfType(alice, "presence")).toHaveLength(1);
    laptop.peerClose();
    expect(framesOfType(alice, "presence").at(-1)).toEqual({
      type: "presence",
      userId: "bob",
      status: "offline",
      changedAtMs: edge.clock.wallMs,
    });
    expect(framesOfType(alice, "presence")).toHaveLength(2);
    // This edge announced one claim and its end, whatever the number of bob's sessions.
    expect(edge.presence.claims.filter((claim) => claim.userId === "bob")).toEqual([
      { userId: "bob", status: "online" },
      { userId: "bob", status: "offline" },
    ]);
  });

  it("follows users online on other edges: a claim, its expiry, and a goodbye", async () => {
    const edge = newEdge();
    const alice = await device(edge, "alice", "phone");
    watch(alice, "w1", ["bob", "carol"]);
    await reply(alice, "w1");
    edge.presence.receive({ type: "presence.heartbeat", edgeInstanceId: "edge-2", claimTtlMs: 3000, userIds: ["bob"] });
    edge.presence.receive({ type: "presence.change", edgeInstanceId: "edge-3", claimTtlMs: 3000, userId: "carol", status: "online" });
    expect(framesOfType(alice, "presence").map((frame) => `${String(frame["userId"])}:${String(frame["status"])}`)).toEqual([
      "bob:online",
      "carol:online",
    ]);
    edge.clock.advance(2999);
    edge.presence.expire();
    expect(framesOfType(alice, "presence")).toHaveLength(2);
    edge.clock.advance(1);
    edge.presence.expire();
    edge.presence.receive({ type: "presence.goodbye", edgeInstanceId: "edge-3" });
    expect(
      framesOfType(alice, "presence")
        .slice(2)
        .map((frame) => `${String(frame["userId"])}:${String(frame["status"])}`),
    ).toEqual(["bob:offline", "carol:offline"]);
  });

  it("replaces the watched set with each watchPresence; an empty one stops the frames", async () => {
    const edge = newEdge();
    const alice = await device(edge, "alice", "phone");
    watch(alice, "w1", ["bob"]);
    await reply(alice, "w1");
    watch(alice, "w2", ["carol"]);
    await reply(alice, "w2");
    await device(edge, "bob", "phone");
    expect(framesOfType(alice, "presence")).toEqual([]);
    const carol = await device(edge, "carol", "phone");
    expect(framesOfType(alice, "presence").map((frame) => frame["userId"])).toEqual(["carol"]);
    watch(alice, "w3", []);
    expect(await reply(alice, "w3")).toEqual({ type: "presenceSnapshot", requestId: "w3", users: [] });
    carol.peerClose();
    expect(framesOfType(alice, "presence")).toHaveLength(1);
    expect(edge.core.watchedUserCount).toBe(0);
  });

  it("lets go of a closed watcher's users and writes nothing to it", async () => {
    const edge = newEdge();
    const alice = await device(edge, "alice", "phone");
    watch(alice, "w1", ["bob"]);
    await reply(alice, "w1");
    const written = alice.texts.length;
    alice.peerClose();
    expect(edge.core.watchedUserCount).toBe(0);
    await device(edge, "bob", "phone");
    expect(alice.texts).toHaveLength(written);
  });

  it("sends a change that happens while the snapshot waits for warm-up, then the snapshot, which is never older", async () => {
    const edge = newEdge();
    const warm = deferred<void>();
    edge.presence.statesGate = warm.promise;
    const alice = await device(edge, "alice", "phone");
    watch(alice, "w1", ["bob"]);
    await settle();
    edge.presence.receive({ type: "presence.change", edgeInstanceId: "edge-2", claimTtlMs: 3000, userId: "bob", status: "online" });
    warm.resolve();
    const snapshot = await reply(alice, "w1");
    const types = alice.frames.map((frame) => frame["type"]).filter((type) => type === "presence" || type === "presenceSnapshot");
    expect(types).toEqual(["presence", "presenceSnapshot"]);
    expect(snapshot["users"]).toEqual([{ userId: "bob", status: "online", changedAtMs: edge.clock.wallMs }]);
  });

  it("refuses more than presenceWatchUsersMax users or a repeated one with invalid_field, keeping the old set", async () => {
    const edge = newEdge();
    const alice = await device(edge, "alice", "phone");
    watch(alice, "w1", ["bob"]);
    await reply(alice, "w1");
    watch(
      alice,
      "w2",
      Array.from({ length: presenceWatchUsersMax + 1 }, (_, index) => `user${index}`),
    );
    expect(await reply(alice, "w2")).toMatchObject({ type: "error", code: "invalid_field", retryable: false });
    watch(alice, "w3", ["bob", "bob"]);
    expect(await reply(alice, "w3")).toMatchObject({ type: "error", code: "invalid_field" });
    await device(edge, "bob", "phone");
    expect(framesOfType(alice, "presence").map((frame) => frame["userId"])).toEqual(["bob"]);
  });

  describe("under the shared_conversation policy", () => {
    /** An edge whose one cell says alice shares a conversation with bob, and nobody else shares one. */
    function sharedConversationEdge(): FakeEdge {
      const conversations = [["alice", "bob"]];
      return newEdge(
        {},
        {
          presenceAccess: new SharedConversationAccess(
            { pairsMax: 100, ttlMs: 60_000 },
            {
              listCellIds: async () => ["a"],
              requestCell: async (_cellId, request): Promise<CellReply> => {
                if (request.type !== "cell.sharedPeers") throw new Error("asked something else");
                const mine = conversations.filter((members) => members.includes(request.userId));
                return {
                  type: "cell.sharedPeers",
                  userId: request.userId,
                  peerUserIds: request.peerUserIds.filter((peer) => mine.some((members) => members.includes(peer))),
                };
              },
              nowMs: () => 0,
              warn: () => undefined,
            },
          ),
        },
      );
    }

    it("shows a user who shares no conversation with the watcher exactly like one who never came online, and never sends a change", async () => {
      const edge = sharedConversationEdge();
      await device(edge, "alice", "phone");
      const onlineAtMs = edge.clock.wallMs;
      const mallory = await device(edge, "mallory", "phone");
      const bob = await device(edge, "bob", "phone");
      watch(mallory, "w1", ["alice", "nobody"]);
      const snapshot = await reply(mallory, "w1");
      expect(snapshot["users"]).toEqual([
        { userId: "alice", status: "offline", changedAtMs: null },
        { userId: "nobody", status: "offline", changedAtMs: null },
      ]);
      watch(bob, "w2", ["alice", "mallory"]);
      expect((await reply(bob, "w2"))["users"]).toEqual([
        { userId: "alice", status: "online", changedAtMs: onlineAtMs },
        { userId: "mallory", status: "offline", changedAtMs: null },
      ]);
      // alice's second device, then both leaving: bob hears her go offline, mallory hears nothing.
      await device(edge, "alice", "laptop");
      for (const transport of edge.transports) if (transport.isOpen && transport !== mallory && transport !== bob) transport.peerClose();
      expect(framesOfType(bob, "presence").map((frame) => `${String(frame["userId"])}:${String(frame["status"])}`)).toEqual([
        "alice:offline",
      ]);
      expect(framesOfType(mallory, "presence")).toEqual([]);
      expect(edge.core.watchedUserCount).toBe(1);
    });
  });
});
