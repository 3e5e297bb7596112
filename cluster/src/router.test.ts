import { describe, expect, it } from "vitest";
import type { CellReply, CellRequest, Message } from "@cellwire/protocol";
import { UnavailableError, RemoteError } from "./errors.ts";
import { Router, homeKeyOf, routerDefaults, type HomeDirectory, type HomeKey, type HomeLocation, type RouterOptions } from "./router.ts";

const sendRequest: CellRequest = {
  type: "cell.send",
  senderUserId: "alice",
  senderDeviceId: "phone",
  conversationId: "g-1",
  clientMessageId: "c-1",
  body: "hi",
};
const pageRequest: CellRequest = { type: "cell.mailboxPage", userId: "bob", afterSeq: 0, limit: 10 };
const message: Message = {
  conversationId: "g-1",
  messageId: "m-1",
  seq: 1,
  senderUserId: "alice",
  senderDeviceId: "phone",
  clientMessageId: "c-1",
  body: "hi",
  sentAtMs: 1,
};
const stored: CellReply = { type: "cell.stored", message, deduplicated: false };
const moving: CellReply = { type: "cell.error", code: "moving", message: "frozen" };

/** A cache that records what the router tells it, keeping the newest epoch like the real ones. */
class FakeHomes implements HomeDirectory {
  readonly homes = new Map<string, HomeLocation>();
  readonly log: string[] = [];
  resolves = 0;

  async resolve(key: HomeKey): Promise<HomeLocation | undefined> {
    this.resolves++;
    return this.homes.get(key.id);
  }

  moved(key: HomeKey, location: HomeLocation): void {
    this.log.push(`moved ${key.id} ${location.cellId}@${location.epoch}`);
    const held = this.homes.get(key.id);
    if (held === undefined || held.epoch < location.epoch) this.homes.set(key.id, location);
  }

  forget(key: HomeKey, epoch: number): void {
    this.log.push(`forget ${key.id}@${epoch}`);
  }
}

function setup(answer: (cellId: string, request: CellRequest, call: number) => CellReply, options: Partial<RouterOptions> = {}) {
  const homes = new FakeHomes();
  const sent: string[] = [];
  const sleeps: number[] = [];
  let nowMs = 0;
  const router = new Router(
    homes,
    {
      request: async (cellId, request) => {
        sent.push(cellId);
        return answer(cellId, request, sent.length);
      },
    },
    { ...routerDefaults, ...options },
    {
      monotonicNowMs: () => nowMs,
      random: () => 1,
      sleep: async (ms) => {
        sleeps.push(ms);
        nowMs += ms;
      },
    },
  );
  return { router, homes, sent, sleeps };
}

function movedTo(cellId: string, epoch: number, id = "g-1"): CellReply {
  return { type: "cell.moved", kind: "conversation", id, cellId, epoch };
}

describe("homeKeyOf", () => {
  it("homes mailbox requests by user and the rest, reads of a conversation's log included, by conversation", () => {
    expect(homeKeyOf(pageRequest)).toEqual({ kind: "user", id: "bob" });
    const joined = {
      kind: "joined",
      conversationId: "g-1",
      conversationKind: "group",
      title: "t",
      afterSeq: 0,
      addedByUserId: "alice",
    } as const;
    expect(homeKeyOf({ type: "cell.appendMailbox", userId: "bob", eventId: "e", event: joined })).toEqual({ kind: "user", id: "bob" });
    expect(homeKeyOf(sendRequest)).toEqual({ kind: "conversation", id: "g-1" });
    // A read of a conversation's log goes to the conversation's home, whoever asks.
    expect(homeKeyOf({ type: "cell.messagesAfter", userId: "bob", conversationId: "g-1", afterSeq: null, limit: 10 })).toEqual({
      kind: "conversation",
      id: "g-1",
    });
    expect(homeKeyOf({ type: "cell.migrate", kind: "user", id: "carol", toCellId: "b" })).toEqual({ kind: "user", id: "carol" });
    expect(homeKeyOf({ type: "cell.stats" })).toBeUndefined();
  });
});

describe("Router", () => {
  it("sends to the resolved home and returns the reply with the home it came from", async () => {
    const { router, homes, sent } = setup(() => stored);
    homes.homes.set("g-1", { cellId: "a", epoch: 1 });
    expect(await router.toHome(sendRequest)).toEqual({ kind: "reply", reply: stored, home: { cellId: "a", epoch: 1 } });
    expect(sent).toEqual(["a"]);
  });

  it("answers no_entry when the directory has no entry, sending nothing", async () => {
    const { router, sent } = setup(() => stored);
    expect(await router.toHome(sendRequest)).toEqual({ kind: "no_entry" });
    expect(sent).toEqual([]);
  });

  it("follows a chain of moves at once, telling the cache each newer home", async () => {
    const { router, homes, sent, sleeps } = setup((cellId) =>
      cellId === "a" ? movedTo("b", 2) : cellId === "b" ? movedTo("c", 3) : stored,
    );
    homes.homes.set("g-1", { cellId: "a", epoch: 1 });
    expect(await router.toHome(sendRequest)).toMatchObject({ kind: "reply", home: { cellId: "c", epoch: 3 } });
    expect(sent).toEqual(["a", "b", "c"]);
    expect(homes.log).toEqual(["moved g-1 b@2", "moved g-1 c@3"]);
    expect(homes.homes.get("g-1")).toEqual({ cellId: "c", epoch: 3 });
    expect(sleeps).toEqual([]);
  });

  it("waits a growing, capped backoff while the key is moving, then returns the reply", async () => {
    const { router, homes, sent, sleeps } = setup((_cellId, _request, call) => (call <= 6 ? moving : stored));
    homes.homes.set("g-1", { cellId: "a", epoch: 1 });
    expect(await router.toHome(sendRequest)).toMatchObject({ kind: "reply", reply: stored });
    expect(sent).toHaveLength(7);
    // random() = 1 gives each ceiling: 10 · 2^n, capped at 200.
    expect(sleeps).toEqual([10, 20, 40, 80, 160, 200]);
  });

  it("asks the cache again after moving, so a flip learnt meanwhile is followed", async () => {
    const { router, homes, sent } = setup((cellId) => {
      if (cellId === "a") {
        homes.homes.set("g-1", { cellId: "b", epoch: 2 });
        return moving;
      }
      return stored;
    });
    homes.homes.set("g-1", { cellId: "a", epoch: 1 });
    expect(await router.toHome(sendRequest)).toMatchObject({ kind: "reply", home: { cellId: "b", epoch: 2 } });
    expect(sent).toEqual(["a", "b"]);
  });

  it("fails with cell_unavailable when the key is still moving at the deadline", async () => {
    const { router, homes, sent, sleeps } = setup(() => moving, { deadlineMs: 1000 });
    homes.homes.set("g-1", { cellId: "a", epoch: 1 });
    const failure = router.toHome(sendRequest);
    await expect(failure).rejects.toBeInstanceOf(UnavailableError);
    await expect(failure).rejects.toMatchObject({ code: "cell_unavailable" });
    expect(sleeps.reduce((sum, ms) => sum + ms, 0)).toBe(1000);
    expect(sent.length).toBe(sleeps.length);
  });

  it("fails with cell_unavailable when moves go on past attemptsMax", async () => {
    let epoch = 1;
    const { router, homes, sent } = setup(() => movedTo(`c${epoch}`, ++epoch), { attemptsMax: 5 });
    homes.homes.set("g-1", { cellId: "a", epoch: 1 });
    await expect(router.toHome(sendRequest)).rejects.toMatchObject({
      name: "UnavailableError",
      code: "cell_unavailable",
      message: expect.stringMatching(/kept moving/),
    });
    expect(sent).toHaveLength(5);
  });

  it("never follows a move to an older or equal epoch: drops the held home and asks the directory again", async () => {
    const { router, homes, sent } = setup((cellId, _request, call) => {
      if (call === 1) return movedTo("old", 1);
      return cellId === "b" ? stored : movedTo("old", 1);
    });
    homes.homes.set("g-1", { cellId: "a", epoch: 2 });
    homes.forget = (key, epoch) => {
      homes.log.push(`forget ${key.id}@${epoch}`);
      homes.homes.set("g-1", { cellId: "b", epoch: 3 });
    };
    expect(await router.toHome(sendRequest)).toMatchObject({ kind: "reply", home: { cellId: "b", epoch: 3 } });
    expect(sent).toEqual(["a", "b"]);
    expect(homes.log).toEqual(["forget g-1@2"]);
  });

  it("does not go back to an older home a lagging cache returns after a move", async () => {
    const { router, homes, sent } = setup((cellId, _request, call) => {
      if (cellId === "a") return movedTo("b", 2);
      return call < 4 ? moving : stored;
    });
    homes.homes.set("g-1", { cellId: "a", epoch: 1 });
    // The cache ignores what it is told, and keeps answering the old home.
    homes.moved = () => undefined;
    expect(await router.toHome(sendRequest)).toMatchObject({ kind: "reply", home: { cellId: "b", epoch: 2 } });
    expect(sent).toEqual(["a", "b", "b", "b"]);
  });

  it("rejects a move that names another key", async () => {
    const { router, homes } = setup(() => movedTo("b", 2, "g-other"));
    homes.homes.set("g-1", { cellId: "a", epoch: 1 });
    await expect(router.toHome(sendRequest)).rejects.toBeInstanceOf(RemoteError);
  });

  it("returns other error replies as they are, without retrying", async () => {
    const { router, homes, sent } = setup(() => ({ type: "cell.error", code: "not_a_member", message: "no" }));
    homes.homes.set("bob", { cellId: "a", epoch: 1 });
    expect(await router.toHome(pageRequest)).toMatchObject({ kind: "reply", reply: { code: "not_a_member" } });
    expect(sent).toEqual(["a"]);
  });

  it("lets a failure of the cells through", async () => {
    const homes = new FakeHomes();
    homes.homes.set("g-1", { cellId: "a", epoch: 1 });
    const router = new Router(
      homes,
      { request: async () => Promise.reject(new UnavailableError("cell_unavailable", "silent")) },
      routerDefaults,
      { monotonicNowMs: () => 0, random: () => 0, sleep: async () => undefined },
    );
    await expect(router.toHome(sendRequest)).rejects.toThrow("silent");
  });
});

describe("Router.toCell", () => {
  it("sends to the named cell with the caller's deadline and follows no move, asking no directory", async () => {
    const homes = new FakeHomes();
    const asked: [string, string, number | undefined][] = [];
    const moved = movedTo("b", 2);
    const router = new Router(
      homes,
      {
        request: async (cellId, request, deadlineAtMs) => {
          asked.push([cellId, request.type, deadlineAtMs]);
          return moved;
        },
      },
      routerDefaults,
      { monotonicNowMs: () => 0, random: () => 0, sleep: async () => undefined },
    );
    expect(await router.toCell("a", { type: "cell.sharedPeers", userId: "alice", peerUserIds: ["bob"] }, 700)).toBe(moved);
    expect(asked).toEqual([["a", "cell.sharedPeers", 700]]);
    expect(homes.resolves).toBe(0);
  });
});

describe("Router under the caller's deadline (docs/decisions/0020)", () => {
  /**
   * A key that is `moving` until 4,900 ms, then a home whose owner is slow: the cells' requester (as
   * CellRouter does) waits up to its own 8,000 ms cap, or the deadline it is given if sooner.
   */
  function slowAfterMoving(callerDeadlineAtMs: number | undefined) {
    const homes = new FakeHomes();
    homes.homes.set("g-1", { cellId: "a", epoch: 1 });
    let nowMs = 0;
    const deadlinesSeen: (number | undefined)[] = [];
    const cellRouterDeadlineMs = 8000;
    const router = new Router(
      homes,
      {
        request: async (_cellId, _request, deadlineAtMs) => {
          deadlinesSeen.push(deadlineAtMs);
          if (nowMs < 4900) return moving;
          nowMs = Math.min(deadlineAtMs ?? Number.POSITIVE_INFINITY, nowMs + cellRouterDeadlineMs);
          throw new UnavailableError("cell_unavailable", "the owner did not answer in time");
        },
      },
      { ...routerDefaults, deadlineMs: 5000 },
      {
        monotonicNowMs: () => nowMs,
        random: () => 1,
        sleep: async (ms) => {
          nowMs += ms;
        },
      },
    );
    return { router, deadlinesSeen, nowMs: () => nowMs, request: () => router.toHome(sendRequest, callerDeadlineAtMs) };
  }

  it("never waits past the caller's deadline, where a moving key then a slow owner used to take ~13 s", async () => {
    const { request, deadlinesSeen, nowMs } = slowAfterMoving(8000);
    await expect(request()).rejects.toMatchObject({ code: "cell_unavailable" });
    expect(nowMs()).toBeLessThanOrEqual(8000);
    // Every attempt was told the caller's deadline, so the cells' requester could not stack its own budget.
    expect(deadlinesSeen.every((deadline) => deadline === 8000)).toBe(true);
  });

  it("without a caller's deadline, its own deadline bounds the whole call, attempts included", async () => {
    const { request, nowMs } = slowAfterMoving(undefined);
    await expect(request()).rejects.toMatchObject({ code: "cell_unavailable" });
    expect(nowMs()).toBeLessThanOrEqual(5000);
  });

  it("sends nothing once the caller's deadline has passed, answering deadline_exceeded", async () => {
    const { router, sent } = setup(() => stored);
    await expect(router.toHome(sendRequest, 0)).rejects.toMatchObject({ name: "UnavailableError", code: "deadline_exceeded" });
    expect(sent).toEqual([]);
  });
});
