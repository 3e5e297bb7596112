import { describe, expect, it } from "vitest";
import { userRingKey, type CellMigrateRequest, type CellReply } from "@cellwire/protocol";
import { cellErrorReply } from "./cell-error-reply.ts";
import { FrozenKeySweeper, selectFrozenKeysToResume, type FrozenKeySelectionInput, type WatchedKey } from "./frozen-key-sweeper.ts";
import { compareMigrationKeys } from "./store/key-state.ts";
import type { FrozenKey, MigrationKey } from "./store/store.ts";

const intervalMs = 5000;
const conversation = (id: string, movingToCellId: string | null = "b"): FrozenKey => ({ kind: "conversation", id, movingToCellId });
const user = (id: string, movingToCellId: string | null = "b"): FrozenKey => ({ kind: "user", id, movingToCellId });

function select(
  frozen: readonly FrozenKey[],
  firstSeenAtMs: ReadonlyMap<string, WatchedKey>,
  nowMs: number,
  overrides: Partial<FrozenKeySelectionInput> = {},
) {
  return selectFrozenKeysToResume({
    frozen,
    firstSeenAtMs,
    watchedKeysMax: 100,
    nowMs,
    frozenForMsMin: intervalMs,
    owns: () => true,
    migrating: () => false,
    resumesMax: 10,
    ...overrides,
  });
}

describe("selectFrozenKeysToResume", () => {
  it("resumes a key only once it has been seen frozen toward the same cell for a whole interval", () => {
    const keys = [conversation("g-1"), user("u1")];
    const first = select(keys, new Map(), 1000);
    expect(first.resume).toEqual([]);
    expect(select(keys, first.firstSeenAtMs, 1000 + intervalMs - 1).resume).toEqual([]);
    const later = select(keys, first.firstSeenAtMs, 1000 + intervalMs);
    expect(later.resume).toEqual([
      { kind: "conversation", id: "g-1", toCellId: "b" },
      { kind: "user", id: "u1", toCellId: "b" },
    ]);
    // Frozen again toward another cell: a new move, watched from now.
    const retargeted = select([conversation("g-1", "c")], later.firstSeenAtMs, 1000 + 2 * intervalMs);
    expect(retargeted.resume).toEqual([]);
    expect(select([conversation("g-1", "c")], retargeted.firstSeenAtMs, 1000 + 3 * intervalMs).resume).toEqual([
      { kind: "conversation", id: "g-1", toCellId: "c" },
    ]);
  });

  it("leaves keys owned elsewhere or being moved here, and watches them afresh once that changes", () => {
    const keys = [conversation("g-1"), user("u1")];
    const owner = { owns: (ringKey: string) => ringKey !== userRingKey("u1"), migrating: (ringKey: string) => ringKey === "g-1" };
    const first = select(keys, new Map(), 0, owner);
    expect(first.firstSeenAtMs.size).toBe(0);
    const second = select(keys, first.firstSeenAtMs, intervalMs, owner);
    expect(second.resume).toEqual([]);
    // Owned and no longer moved here: an interval from now, not from the first sight.
    const third = select(keys, second.firstSeenAtMs, 2 * intervalMs);
    expect(third.resume).toEqual([]);
    expect(select(keys, third.firstSeenAtMs, 3 * intervalMs).resume).toHaveLength(2);
  });

  it("keeps watching keys outside a listing cut by the cursor, forgets those missing inside it, within its bound", () => {
    const first = select([user("u1"), user("u2")], new Map(), 0, { listedThrough: { kind: "user", id: "u2" } });
    // The next listing covers u3 and after: u1 and u2 stay watched, so their next listing resumes them.
    const second = select([user("u3")], first.firstSeenAtMs, intervalMs, { listedAfter: { kind: "user", id: "u2" } });
    expect([...second.firstSeenAtMs.values()].map((entry) => entry.key.id)).toEqual(["u3", "u1", "u2"]);
    expect(select([user("u1"), user("u2")], second.firstSeenAtMs, 2 * intervalMs).resume.map((key) => key.id)).toEqual(["u1", "u2"]);
    // A listing from the start through u2 that no longer holds u1 forgets it, and keeps u3 (after it).
    const third = select([user("u2")], second.firstSeenAtMs, 2 * intervalMs, { listedThrough: { kind: "user", id: "u2" } });
    expect([...third.firstSeenAtMs.values()].map((entry) => entry.key.id)).toEqual(["u2", "u3"]);
    // The bound: keys outside the listing are kept only while the list holds fewer than watchedKeysMax.
    expect(
      select([user("u3")], first.firstSeenAtMs, intervalMs, { listedAfter: { kind: "user", id: "u2" }, watchedKeysMax: 2 }).firstSeenAtMs
        .size,
    ).toBe(2);
  });

  it("forgets a key missing from a sweep: frozen again later, it waits a whole interval again", () => {
    const first = select([user("u1")], new Map(), 0);
    const gone = select([], first.firstSeenAtMs, intervalMs);
    expect(gone.firstSeenAtMs.size).toBe(0);
    expect(select([user("u1")], gone.firstSeenAtMs, 2 * intervalMs).resume).toEqual([]);
  });

  it("resumes at most resumesMax keys per sweep, keeps watching the rest, and reports keys frozen toward no cell", () => {
    const keys = [user("u1"), user("u2", null), user("u3"), user("u4")];
    const first = select(keys, new Map(), 0, { resumesMax: 2 });
    expect(first.withoutTarget).toEqual([user("u2", null)]);
    const second = select(keys, first.firstSeenAtMs, intervalMs, { resumesMax: 2 });
    expect(second.resume.map((key) => key.id)).toEqual(["u1", "u3"]);
    expect([...second.firstSeenAtMs.values()].map((entry) => entry.sinceMs)).toEqual([0, 0, 0]);
  });
});

describe("FrozenKeySweeper", () => {
  it("walks every frozen key with a cursor: keys that cannot resume do not starve the keys after them", async () => {
    let nowMs = 0;
    // Five keys, listings of two: u1 and u2 (first in order) always refuse, as a target that is gone would.
    const frozen = [user("u1"), user("u2"), user("u3"), user("u4"), user("u5")];
    const listings: (MigrationKey | undefined)[] = [];
    const asked: string[] = [];
    const sweeper = new FrozenKeySweeper({
      store: {
        frozenKeys: async (limit, after) => {
          listings.push(after);
          const rest = after === undefined ? frozen : frozen.filter((key) => compareMigrationKeys(key, after) > 0);
          return rest.slice(0, limit);
        },
      },
      owns: () => true,
      migrating: () => false,
      migrate: async (request): Promise<CellReply> => {
        asked.push(request.id);
        if (request.id === "u1" || request.id === "u2") return cellErrorReply({ kind: "overloaded", reason: "migrations_full" });
        frozen.splice(
          frozen.findIndex((key) => key.id === request.id),
          1,
        );
        return {
          type: "cell.migrated",
          kind: request.kind,
          id: request.id,
          fromCellId: "a",
          toCellId: request.toCellId,
          epoch: 2,
          pauseMs: 1,
          copiedItems: 0,
          alreadyMoved: false,
        };
      },
      clock: { monotonicNowMs: () => nowMs },
      logger: { info: () => undefined, warn: () => undefined },
      limits: { sweepIntervalMs: intervalMs, keysMax: 2, resumesMax: 2 },
    });
    for (let sweep = 0; sweep < 8; sweep += 1) {
      await sweeper.sweep();
      nowMs += intervalMs;
    }
    // The cursor moved on and wrapped: every key was listed and the resumable ones moved.
    expect(listings.slice(0, 4)).toEqual([undefined, { kind: "user", id: "u2" }, { kind: "user", id: "u4" }, undefined]);
    expect(frozen.map((key) => key.id)).toEqual(["u1", "u2"]);
    expect(new Set(asked)).toEqual(new Set(["u1", "u2", "u3", "u4", "u5"]));
  });

  it("runs migrate toward the recorded cell for each key selected, bounded, and logs what it resumes", async () => {
    let nowMs = 0;
    let frozen = [user("u1"), user("u2"), conversation("g-1", "c")];
    const asked: CellMigrateRequest[] = [];
    const logged: string[] = [];
    const sweeper = new FrozenKeySweeper({
      store: { frozenKeys: async (limit) => frozen.slice(0, limit) },
      owns: () => true,
      migrating: () => false,
      migrate: async (request): Promise<CellReply> => {
        asked.push(request);
        // The coordinator at its limit of moves answers overloaded (with a retry-after), as it now does.
        if (request.id === "u2" && asked.length <= 2) return cellErrorReply({ kind: "overloaded", reason: "migrations_full" });
        return {
          type: "cell.migrated",
          kind: request.kind,
          id: request.id,
          fromCellId: "a",
          toCellId: request.toCellId,
          epoch: 2,
          pauseMs: 1,
          copiedItems: 0,
          alreadyMoved: false,
        };
      },
      clock: { monotonicNowMs: () => nowMs },
      logger: { info: (message) => logged.push(message), warn: (message) => logged.push(message) },
      limits: { sweepIntervalMs: intervalMs, keysMax: 3, resumesMax: 2 },
    });
    expect(await sweeper.sweep()).toEqual([]);
    nowMs += intervalMs;
    const resumed = await sweeper.sweep();
    expect(asked).toEqual([
      { type: "cell.migrate", kind: "user", id: "u1", toCellId: "b" },
      { type: "cell.migrate", kind: "user", id: "u2", toCellId: "b" },
    ]);
    expect(resumed.map((move) => move.reply.type)).toEqual(["cell.migrated", "cell.error"]);
    expect(logged.filter((line) => line.startsWith("resuming"))).toHaveLength(2);
    expect(logged.some((line) => line.includes("u2") && line.includes("overloaded") && line.includes("the next sweep tries again"))).toBe(
      true,
    );
    expect(logged.some((line) => line.includes("WORKER_FROZEN_SWEEP_KEYS_MAX=3"))).toBe(true);
    // u1 moved; u2, refused, is still frozen and watched: the next sweep resumes it at once, with g-1.
    frozen = [user("u2"), conversation("g-1", "c")];
    const again = await sweeper.sweep();
    expect(asked.slice(2)).toEqual([
      { type: "cell.migrate", kind: "user", id: "u2", toCellId: "b" },
      { type: "cell.migrate", kind: "conversation", id: "g-1", toCellId: "c" },
    ]);
    expect(again.map((move) => move.reply.type)).toEqual(["cell.migrated", "cell.migrated"]);
  });
});
