// The edge drain with an injected clock: when each session closes, that a session serving a request
// closes only after its reply, and that the grace period bounds the whole drain. Then the same through
// EdgeCore on fake sockets: new sessions refused, replies written before the going_away close.
import { afterEach, describe, expect, it } from "vitest";
import fc from "fast-check";
import { closeCodes, type Message } from "@cellwire/protocol";
import { drainSchedule, EdgeDrain, type DrainOutcome, type DrainTarget } from "./edge-drain.ts";
import { deferred, fakeEdge, framesOfType, type FakeEdge } from "../test/edge-fakes.ts";
import { ManualClock, seededRandom } from "../test/manual-clock.ts";

/** A session stand-in: it may be serving requests, and tells the drain when it closes. */
class Target implements DrainTarget {
  closedAtMs: number | undefined;
  closedBy: "idle" | "grace" | undefined;
  requestsInFlight = 0;
  private closeRequested = false;
  constructor(
    private readonly clock: ManualClock,
    private readonly drain: () => EdgeDrain<Target>,
  ) {}

  closeWhenIdle(): void {
    this.closeRequested = true;
    if (this.requestsInFlight === 0) this.close("idle");
  }

  closeNow(): void {
    this.close("grace");
  }

  answerRequest(): void {
    this.requestsInFlight--;
    if (this.closeRequested && this.requestsInFlight === 0) this.close("idle");
  }

  private close(by: "idle" | "grace"): void {
    if (this.closedAtMs !== undefined) return;
    this.closedAtMs = this.clock.nowMs;
    this.closedBy = by;
    this.drain().closed(this);
  }
}

/** Lets the drain's promise chain settle. */
function flush(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}

function drainOf(
  count: number,
  options: { drainMs: number; graceMs: number },
  clock: ManualClock,
): { drain: EdgeDrain<Target>; targets: Target[] } {
  const drain = new EdgeDrain<Target>(options, clock);
  const targets = Array.from({ length: count }, () => new Target(clock, () => drain));
  return { drain, targets };
}

describe("drainSchedule", () => {
  it("puts every target once in the window, one per equal slice of it, in a random order", () => {
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 300 }), fc.integer({ min: 1, max: 60_000 }), fc.integer(), (count, drainMs, seed) => {
        const targets = Array.from({ length: count }, (_, index) => index);
        const schedule = drainSchedule(targets, drainMs, seededRandom(seed));
        expect(schedule.map((entry) => entry.target).sort((a, b) => a - b)).toEqual(targets);
        schedule.forEach((entry, index) => {
          // The index-th close lies in the index-th slice: never two crowded into one slice.
          expect(entry.closeAtMs).toBeGreaterThanOrEqual(Math.floor((index * drainMs) / count));
          expect(entry.closeAtMs).toBeLessThan(Math.max(1, Math.ceil(((index + 1) * drainMs) / count)));
        });
      }),
    );
  });

  it("closes everything at 0 with a window of 0, and stays in the window whatever the random source returns", () => {
    expect(drainSchedule(["a", "b", "c"], 0, Math.random).map((entry) => entry.closeAtMs)).toEqual([0, 0, 0]);
    for (const draw of [Number.NaN, -1, 1, 7]) {
      for (const entry of drainSchedule([1, 2, 3, 4], 1000, () => draw)) {
        expect(entry.closeAtMs).toBeGreaterThanOrEqual(0);
        expect(entry.closeAtMs).toBeLessThan(1000);
      }
    }
  });
});

describe("EdgeDrain", () => {
  it("closes the sessions spread over the window, not together, and resolves when the last has closed", async () => {
    const clock = new ManualClock(seededRandom(7));
    const { drain, targets } = drainOf(100, { drainMs: 5000, graceMs: 5000 }, clock);
    let outcome: DrainOutcome | undefined;
    void drain.run(targets).then((result) => (outcome = result));
    // No session closes before its moment: after 1 s of a 5 s window, about a fifth are gone.
    clock.advanceTo(1000);
    const closedAfterOneSecond = targets.filter((target) => target.closedAtMs !== undefined).length;
    expect(closedAfterOneSecond).toBeGreaterThanOrEqual(19);
    expect(closedAfterOneSecond).toBeLessThanOrEqual(21);
    clock.advanceTo(4999);
    await flush();
    expect(targets.every((target) => target.closedBy === "idle")).toBe(true);
    expect(outcome).toEqual({
      sessions: 100,
      closedAtGrace: 0,
      durationMs: targets.map((target) => target.closedAtMs ?? 0).reduce((a, b) => Math.max(a, b)),
    });
    // Each 500 ms of the window closed 10 sessions: evenly spread.
    for (let sliceStartMs = 0; sliceStartMs < 5000; sliceStartMs += 500) {
      const inSlice = targets.filter(
        (target) => (target.closedAtMs ?? -1) >= sliceStartMs && (target.closedAtMs ?? -1) < sliceStartMs + 500,
      );
      expect(inSlice).toHaveLength(10);
    }
    // The timers of the drain are gone with it.
    expect(clock.pendingTimers).toBe(0);
  });

  it("closes a session serving a request only once its reply is out, and one still serving at the grace period's end then", async () => {
    const clock = new ManualClock();
    const { drain, targets } = drainOf(3, { drainMs: 300, graceMs: 1000 }, clock);
    const [quick, slow, stuck] = targets as [Target, Target, Target];
    quick.requestsInFlight = 1;
    slow.requestsInFlight = 2;
    stuck.requestsInFlight = 1;
    let outcome: DrainOutcome | undefined;
    void drain.run(targets).then((result) => (outcome = result));
    clock.advanceTo(300);
    // Their moments have all come, yet each is still serving.
    expect(targets.map((target) => target.closedAtMs)).toEqual([undefined, undefined, undefined]);
    clock.advanceTo(400);
    quick.answerRequest();
    expect(quick.closedAtMs).toBe(400);
    slow.answerRequest();
    expect(slow.closedAtMs).toBeUndefined();
    clock.advanceTo(900);
    slow.answerRequest();
    expect(slow.closedAtMs).toBe(900);
    clock.advanceTo(1299);
    await flush();
    expect(stuck.closedAtMs).toBeUndefined();
    expect(outcome).toBeUndefined();
    clock.advanceTo(1300);
    await flush();
    expect(stuck.closedBy).toBe("grace");
    expect(stuck.closedAtMs).toBe(1300);
    expect(outcome).toEqual({ sessions: 3, closedAtGrace: 1, durationMs: 1300 });
  });

  it("resolves at once with no session, and early when clients leave by themselves", async () => {
    const clock = new ManualClock();
    const empty = new EdgeDrain<Target>({ drainMs: 5000, graceMs: 5000 }, clock);
    await expect(empty.run([])).resolves.toEqual({ sessions: 0, closedAtGrace: 0, durationMs: 0 });
    expect(clock.pendingTimers).toBe(0);

    const { drain, targets } = drainOf(2, { drainMs: 5000, graceMs: 5000 }, clock);
    const running = drain.run(targets);
    clock.advanceTo(10);
    // Both clients leave before their moment (the drain was told of each close).
    for (const target of targets) drain.closed(target);
    await expect(running).resolves.toMatchObject({ sessions: 2, closedAtGrace: 0 });
    expect(targets.map((target) => target.closedAtMs)).toEqual([undefined, undefined]);
    expect(clock.pendingTimers).toBe(0);
  });
});

describe("EdgeCore.drainSessions", () => {
  const edges: FakeEdge[] = [];
  afterEach(() => {
    const violations = edges.flatMap((edge) => edge.transports.flatMap((transport) => transport.violations));
    for (const edge of edges.splice(0)) edge.core.closeAll();
    expect(violations).toEqual([]);
  });

  const groupId = "g-AAAAAAAAAAAAAAAAAAAAAA";
  const stored = (clientMessageId: string): Message => ({
    conversationId: groupId,
    messageId: `m-${clientMessageId}`,
    seq: 1,
    senderUserId: "alice",
    senderDeviceId: "default",
    clientMessageId,
    body: "hi",
    sentAtMs: 1_700_000_000_000,
  });

  it("refuses new sessions, answers the send in flight, then closes every session with going_away at its moment", async () => {
    const edge = fakeEdge();
    edges.push(edge);
    edge.directory.conversations.set(groupId, { kind: "conversation", id: groupId, cellId: "a", epoch: 1 });
    const held = deferred<void>();
    edge.router.answers.set("cell.send", async (_cellId, request) => {
      if (request.type !== "cell.send") throw new Error("routed wrongly");
      await held.promise;
      return { type: "cell.stored", message: stored(request.clientMessageId), deduplicated: false };
    });
    const sessions = await Promise.all(["alice", "bob", "carol", "dave"].map((userId) => edge.authenticated(userId)));
    const [busy] = sessions;
    if (busy === undefined) throw new Error("no session");
    busy.transport.receiveJson({ type: "send", requestId: "r-1", conversationId: groupId, clientMessageId: "c-1", body: "hi" });

    const clock = new ManualClock();
    let outcome: DrainOutcome | undefined;
    void edge.core.drainSessions({ drainMs: 4000, graceMs: 10_000 }, clock).then((result) => (outcome = result));
    // A socket opened while draining is closed at once, so the client tries another edge.
    const late = edge.connect();
    expect(late.session).toBeUndefined();
    expect(late.transport.closeCode).toBe(closeCodes.going_away.code);
    // Nothing closes before its moment.
    expect(sessions.filter(({ transport }) => transport.closeCode !== undefined)).toEqual([]);

    clock.advanceTo(3999);
    const idle = sessions.slice(1);
    for (const { transport } of idle) expect(transport.closeCode).toBe(closeCodes.going_away.code);
    // The closes came one per quarter of the window, each at its own moment.
    expect(busy.transport.closeCode).toBeUndefined();

    held.resolve();
    expect(await busy.transport.closed()).toBe(closeCodes.going_away.code);
    // The ack was written before the close.
    expect(framesOfType(busy.transport, "ack")).toHaveLength(1);
    expect(busy.transport.frames.at(-1)?.["type"]).toBe("ack");
    await flush();
    expect(outcome).toMatchObject({ sessions: 4, closedAtGrace: 0 });
    expect(edge.core.sessionCount).toBe(0);
  });

  it("closes a session whose request is still unanswered when the grace period ends", async () => {
    const edge = fakeEdge();
    edges.push(edge);
    edge.directory.conversations.set(groupId, { kind: "conversation", id: groupId, cellId: "a", epoch: 1 });
    edge.router.answers.set("cell.send", () => new Promise(() => undefined));
    const { transport } = await edge.authenticated("alice");
    transport.receiveJson({ type: "send", requestId: "r-1", conversationId: groupId, clientMessageId: "c-1", body: "hi" });
    const clock = new ManualClock();
    const drained = edge.core.drainSessions({ drainMs: 1000, graceMs: 2000 }, clock);
    clock.advanceTo(2999);
    expect(transport.closeCode).toBeUndefined();
    clock.advanceTo(3000);
    expect(transport.closeCode).toBe(closeCodes.going_away.code);
    await expect(drained).resolves.toEqual({ sessions: 1, closedAtGrace: 1, durationMs: 3000 });
  });
});
