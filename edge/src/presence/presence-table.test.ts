// Presence aggregation and expiry with an injected clock: over a user's sessions on this edge and over the
// claims of other edges, with claims lapsing claimTtlMs after the last message that made them.
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import type { PresenceMessage } from "@cellwire/protocol";
import { PresenceTable, type PresenceTableOptions } from "./presence-table.ts";

class TestClock {
  monotonicMs = 1000;
  wallMs = 1_700_000_000_000;
  readonly monotonicNowMs = (): number => this.monotonicMs;
  readonly wallNowMs = (): number => this.wallMs;
  advance(durationMs: number): void {
    this.monotonicMs += durationMs;
    this.wallMs += durationMs;
  }
}

function table(options: Partial<PresenceTableOptions> = {}): { presence: PresenceTable; clock: TestClock } {
  const clock = new TestClock();
  const presence = new PresenceTable(
    { localEdgeInstanceId: "here", remoteClaimsMax: 1000, offlineUsersRememberedMax: 1000, ...options },
    clock,
  );
  return { presence, clock };
}

const heartbeat = (edgeInstanceId: string, userIds: string[], claimTtlMs = 3000): PresenceMessage => ({
  type: "presence.heartbeat",
  edgeInstanceId,
  claimTtlMs,
  userIds,
});
const change = (edgeInstanceId: string, userId: string, status: "online" | "offline", claimTtlMs = 3000): PresenceMessage => ({
  type: "presence.change",
  edgeInstanceId,
  claimTtlMs,
  userId,
  status,
});

describe("PresenceTable: this edge's sessions", () => {
  it("is online from the first session to the last, and says when the claim starts and ends", () => {
    const { presence, clock } = table();
    expect(presence.stateOf("alice")).toEqual({ userId: "alice", status: "offline", changedAtMs: null });
    const opened = presence.localSessionOpened("alice");
    expect(opened).toEqual({ claimChanged: true, changes: [{ userId: "alice", status: "online", changedAtMs: clock.wallMs }] });
    const onlineAtMs = clock.wallMs;
    clock.advance(10);
    expect(presence.localSessionOpened("alice")).toEqual({ claimChanged: false, changes: [] });
    expect(presence.localSessionClosed("alice")).toEqual({ claimChanged: false, changes: [] });
    expect(presence.stateOf("alice")).toEqual({ userId: "alice", status: "online", changedAtMs: onlineAtMs });
    clock.advance(10);
    expect(presence.localSessionClosed("alice")).toEqual({
      claimChanged: true,
      changes: [{ userId: "alice", status: "offline", changedAtMs: clock.wallMs }],
    });
    expect(presence.stateOf("alice")).toEqual({ userId: "alice", status: "offline", changedAtMs: clock.wallMs });
    expect(presence.localUserIds()).toEqual([]);
  });

  it("ignores a close without an open", () => {
    const { presence } = table();
    expect(presence.localSessionClosed("ghost")).toEqual({ claimChanged: false, changes: [] });
  });

  it("never lets this edge's sessions lapse, whatever the time", () => {
    const { presence, clock } = table();
    presence.localSessionOpened("alice");
    clock.advance(10 * 60_000);
    expect(presence.expire()).toEqual([]);
    expect(presence.stateOf("alice").status).toBe("online");
    expect(presence.localUserIds()).toEqual(["alice"]);
  });

  it("ignores messages carrying its own edge instance id (NATS echoes them)", () => {
    const { presence } = table();
    presence.localSessionOpened("alice");
    expect(presence.apply(change("here", "alice", "offline"))).toEqual([]);
    expect(presence.apply(heartbeat("here", ["bob"]))).toEqual([]);
    expect(presence.stateOf("alice").status).toBe("online");
    expect(presence.stateOf("bob").status).toBe("offline");
  });
});

describe("PresenceTable: other edges' claims", () => {
  it("aggregates over edges: online while any edge claims the user or a local session exists", () => {
    const { presence } = table();
    expect(presence.apply(change("edge-2", "alice", "online")).map((entry) => entry.status)).toEqual(["online"]);
    expect(presence.apply(change("edge-3", "alice", "online"))).toEqual([]);
    expect(presence.localSessionOpened("alice").changes).toEqual([]);
    expect(presence.apply(change("edge-2", "alice", "offline"))).toEqual([]);
    expect(presence.localSessionClosed("alice").changes).toEqual([]);
    expect(presence.stateOf("alice").status).toBe("online");
    expect(presence.apply(change("edge-3", "alice", "offline")).map((entry) => entry.status)).toEqual(["offline"]);
    expect(presence.remoteClaimCount).toBe(0);
  });

  it("lets a claim stand for the edge's claimTtlMs after the last heartbeat, then drops it at expire()", () => {
    const { presence, clock } = table();
    presence.apply(heartbeat("edge-2", ["alice", "bob"], 3000));
    clock.advance(2000);
    presence.apply(heartbeat("edge-2", ["alice"], 3000));
    clock.advance(999);
    expect(presence.expire()).toEqual([]);
    clock.advance(1);
    // bob's claim was last made 3000 ms ago; alice's was refreshed 1000 ms ago.
    expect(presence.expire()).toEqual([{ userId: "bob", status: "offline", changedAtMs: clock.wallMs }]);
    expect(presence.stateOf("alice").status).toBe("online");
    clock.advance(2000);
    expect(presence.expire().map((entry) => entry.userId)).toEqual(["alice"]);
    expect(presence.remoteClaimCount).toBe(0);
  });

  it("uses each edge's own claimTtlMs", () => {
    const { presence, clock } = table();
    presence.apply(heartbeat("fast", ["alice"], 1000));
    presence.apply(heartbeat("slow", ["bob"], 10_000));
    clock.advance(1000);
    expect(presence.expire().map((entry) => entry.userId)).toEqual(["alice"]);
    clock.advance(8999);
    expect(presence.expire()).toEqual([]);
    clock.advance(1);
    expect(presence.expire().map((entry) => entry.userId)).toEqual(["bob"]);
  });

  it("keeps a user online when one edge's claim lapses while another edge still claims them", () => {
    const { presence, clock } = table();
    presence.apply(heartbeat("dead", ["alice"], 1000));
    clock.advance(500);
    presence.apply(heartbeat("alive", ["alice"], 1000));
    clock.advance(500);
    expect(presence.expire()).toEqual([]);
    expect(presence.remoteClaimCount).toBe(1);
    clock.advance(500);
    expect(presence.expire().map((entry) => entry.status)).toEqual(["offline"]);
  });

  it("drops every claim of an edge on its goodbye", () => {
    const { presence } = table();
    presence.apply(heartbeat("edge-2", ["alice", "bob", "carol"]));
    presence.apply(heartbeat("edge-3", ["carol"]));
    const changes = presence.apply({ type: "presence.goodbye", edgeInstanceId: "edge-2" });
    expect(changes.map((entry) => `${entry.userId}:${entry.status}`).sort()).toEqual(["alice:offline", "bob:offline"]);
    expect(presence.stateOf("carol").status).toBe("online");
    expect(presence.apply({ type: "presence.goodbye", edgeInstanceId: "edge-2" })).toEqual([]);
  });

  it("ignores new claims past remoteClaimsMax and counts them, but refreshes the ones it holds", () => {
    const { presence, clock } = table({ remoteClaimsMax: 2 });
    presence.apply(heartbeat("edge-2", ["alice", "bob", "carol"], 1000));
    expect(presence.remoteClaimCount).toBe(2);
    expect(presence.ignoredClaimCount).toBe(1);
    expect(presence.stateOf("carol").status).toBe("offline");
    clock.advance(900);
    presence.apply(heartbeat("edge-2", ["alice", "bob", "carol"], 1000));
    clock.advance(900);
    expect(presence.expire()).toEqual([]);
    // A local session needs no claim place.
    expect(presence.localSessionOpened("carol").changes.map((entry) => entry.status)).toEqual(["online"]);
  });

  it("remembers when at most offlineUsersRememberedMax users went offline", () => {
    const { presence } = table({ offlineUsersRememberedMax: 2 });
    for (const userId of ["a", "b", "c"]) {
      presence.localSessionOpened(userId);
      presence.localSessionClosed(userId);
    }
    expect(presence.stateOf("a").changedAtMs).toBeNull();
    expect(presence.stateOf("b").changedAtMs).not.toBeNull();
    expect(presence.stateOf("c").changedAtMs).not.toBeNull();
  });

  it("matches a model: online exactly while a session is open here or a claim of another edge has not lapsed", () => {
    const users = ["u1", "u2", "u3"];
    const edges = ["e1", "e2", "e3"];
    type Step =
      | { kind: "open" | "close"; userId: string }
      | { kind: "heartbeat"; edge: string; userIds: string[] }
      | { kind: "online" | "offline"; edge: string; userId: string }
      | { kind: "goodbye"; edge: string }
      | { kind: "advance"; durationMs: number };
    const user = fc.constantFrom(...users);
    const edge = fc.constantFrom(...edges);
    const step: fc.Arbitrary<Step> = fc.oneof(
      fc.record({ kind: fc.constantFrom("open" as const, "close" as const), userId: user }),
      fc.record({ kind: fc.constant("heartbeat" as const), edge, userIds: fc.uniqueArray(user, { minLength: 1 }) }),
      fc.record({ kind: fc.constantFrom("online" as const, "offline" as const), edge, userId: user }),
      fc.record({ kind: fc.constant("goodbye" as const), edge }),
      fc.record({ kind: fc.constant("advance" as const), durationMs: fc.integer({ min: 0, max: 1500 }) }),
    );
    fc.assert(
      fc.property(fc.array(step, { maxLength: 80 }), (steps) => {
        const { presence, clock } = table();
        const ttlMs = 1000;
        const sessions = new Map<string, number>();
        const claims = new Map<string, number>(); // `${edge}/${user}` → lapses at
        const reported = new Map<string, string>();
        const record = (changes: readonly { userId: string; status: string }[]): void => {
          for (const entry of changes) {
            // Every reported change is a real flip.
            expect(reported.get(entry.userId) ?? "offline").not.toBe(entry.status);
            reported.set(entry.userId, entry.status);
          }
        };
        for (const current of steps) {
          switch (current.kind) {
            case "open":
              sessions.set(current.userId, (sessions.get(current.userId) ?? 0) + 1);
              record(presence.localSessionOpened(current.userId).changes);
              break;
            case "close": {
              const count = sessions.get(current.userId) ?? 0;
              if (count <= 1) sessions.delete(current.userId);
              else sessions.set(current.userId, count - 1);
              record(presence.localSessionClosed(current.userId).changes);
              break;
            }
            case "heartbeat":
              for (const userId of current.userIds) claims.set(`${current.edge}/${userId}`, clock.monotonicMs + ttlMs);
              record(presence.apply(heartbeat(current.edge, current.userIds, ttlMs)));
              break;
            case "online":
            case "offline":
              if (current.kind === "online") claims.set(`${current.edge}/${current.userId}`, clock.monotonicMs + ttlMs);
              else claims.delete(`${current.edge}/${current.userId}`);
              record(presence.apply(change(current.edge, current.userId, current.kind, ttlMs)));
              break;
            case "goodbye":
              for (const key of [...claims.keys()]) if (key.startsWith(`${current.edge}/`)) claims.delete(key);
              record(presence.apply({ type: "presence.goodbye", edgeInstanceId: current.edge }));
              break;
            case "advance":
              clock.advance(current.durationMs);
              for (const [key, lapsesAtMs] of [...claims]) if (clock.monotonicMs >= lapsesAtMs) claims.delete(key);
              record(presence.expire());
              break;
          }
          for (const userId of users) {
            const expected = sessions.has(userId) || [...claims.keys()].some((key) => key.endsWith(`/${userId}`));
            expect(presence.stateOf(userId).status, userId).toBe(expected ? "online" : "offline");
            expect(reported.get(userId) ?? "offline", userId).toBe(expected ? "online" : "offline");
          }
        }
      }),
    );
  });
});
