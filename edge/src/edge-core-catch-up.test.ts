// Catch-ups through EdgeCore on fake sockets: after a ring change or a NATS reconnect the sessions read
// their mailbox again each at its own moment of EDGE_CATCH_UP_SPREAD_MS, at most
// EDGE_CATCH_UP_READS_IN_FLIGHT_MAX at once, not all in the turn that learnt of it; and nothing is lost
// meanwhile (docs/decisions/0024).
import { afterEach, describe, expect, it } from "vitest";
import type { CellReply, CellRequest, ReceiptEvent, SequencedEvent } from "@cellwire/protocol";
import { deferred, fakeEdge, framesOfType, type Deferred, type FakeEdge, type FakeTransport } from "../test/edge-fakes.ts";
import { ManualClock, seededRandom } from "../test/manual-clock.ts";

const groupId = "g-AAAAAAAAAAAAAAAAAAAAAA";
const edges: FakeEdge[] = [];

afterEach(() => {
  const violations = edges.flatMap((edge) => edge.transports.flatMap((transport) => transport.violations));
  for (const edge of edges.splice(0)) {
    edge.core.catchUps.stop();
    edge.core.closeAll();
  }
  expect(violations).toEqual([]);
});

function settle(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}

function receipt(readSeq: number): ReceiptEvent {
  return { kind: "receipt", conversationId: groupId, userId: "alice", readSeq, deliveredSeq: readSeq };
}

/**
 * The users' mailboxes as their cell serves cell.mailboxPage: each page read is recorded with the catch-up
 * clock's time, counted while in flight, and waits for `gate` when one is set.
 */
class FakeMailboxes {
  readonly events = new Map<string, SequencedEvent[]>();
  readonly reads: { readonly userId: string; readonly atMs: number }[] = [];
  inFlight = 0;
  inFlightMax = 0;
  gate: Deferred<void> | undefined;

  constructor(private readonly clock: ManualClock) {}

  append(userId: string): SequencedEvent {
    const events = this.events.get(userId) ?? [];
    const event = { seq: events.length + 1, event: receipt(events.length + 1) };
    events.push(event);
    this.events.set(userId, events);
    return event;
  }

  readonly answer = async (_cellId: string, request: CellRequest): Promise<CellReply> => {
    if (request.type !== "cell.mailboxPage") throw new Error(`FakeMailboxes cannot answer ${request.type}`);
    this.reads.push({ userId: request.userId, atMs: this.clock.nowMs });
    this.inFlight++;
    this.inFlightMax = Math.max(this.inFlightMax, this.inFlight);
    try {
      await this.gate?.promise;
      const all = this.events.get(request.userId) ?? [];
      const events = all.filter((event) => event.seq > request.afterSeq).slice(0, request.limit);
      return { type: "cell.mailboxEvents", userId: request.userId, events, headSeq: all.length, floorSeq: 0 };
    } finally {
      this.inFlight--;
    }
  };
}

function edgeWithCatchUps(spreadMs: number, readsInFlightMax: number): { edge: FakeEdge; clock: ManualClock; mailboxes: FakeMailboxes } {
  const clock = new ManualClock(seededRandom(2024));
  const edge = fakeEdge({}, { catchUp: { spreadMs, readsInFlightMax, clock } });
  edges.push(edge);
  const mailboxes = new FakeMailboxes(clock);
  edge.router.answers.set("cell.mailboxPage", mailboxes.answer);
  return { edge, clock, mailboxes };
}

/** `count` users homed in cell "a", each with one session synced at seq 0. */
async function syncedSessions(edge: FakeEdge, count: number): Promise<FakeTransport[]> {
  const transports: FakeTransport[] = [];
  for (let index = 0; index < count; index++) {
    const { transport } = await edge.authenticated(`user${index}`);
    await transport.frame((frame) => frame["type"] === "synced");
    transports.push(transport);
  }
  return transports;
}

describe("catch-ups after a ring change or a NATS reconnect", () => {
  it("reads the mailboxes of a cell's sessions at their own moments of the window, not in the turn of the ring change", async () => {
    const { edge, clock, mailboxes } = edgeWithCatchUps(1000, 100);
    await syncedSessions(edge, 20);
    const readsBefore = mailboxes.reads.length;
    edge.core.cellMembershipChanged("a");
    await settle();
    // Before: all 20 reads in this turn. Now at most the first moment (of [0, 50) ms) can fall at 0.
    expect(mailboxes.reads.length - readsBefore).toBeLessThanOrEqual(1);
    // Time moves in 10 ms steps, the fakes answering in between, so each read is stamped within 10 ms of its moment.
    for (let nowMs = 10; nowMs <= 1000; nowMs += 10) {
      clock.advanceTo(nowMs - 1);
      await settle();
      // Each quarter of the window read a quarter of the mailboxes.
      if (nowMs % 250 === 0) expect(mailboxes.reads.length - readsBefore).toBe((nowMs / 1000) * 20);
    }
    const catchUps = mailboxes.reads.slice(readsBefore);
    expect(new Set(catchUps.map((read) => read.userId)).size).toBe(20);
    expect(new Set(catchUps.map((read) => read.atMs)).size).toBeGreaterThanOrEqual(15);
  });

  it("after a NATS reconnect, reads at most EDGE_CATCH_UP_READS_IN_FLIGHT_MAX mailboxes at once, and every one in the end", async () => {
    const { edge, mailboxes } = edgeWithCatchUps(0, 3);
    const transports = await syncedSessions(edge, 12);
    const framesBefore = transports.map((transport) => transport.frames.length);
    const readsBefore = mailboxes.reads.length;
    mailboxes.gate = deferred<void>();
    edge.core.catchUpAll();
    await settle();
    // Before: 12 reads in flight at once.
    expect(mailboxes.inFlight).toBe(3);
    expect(edge.core.catchUps.readingCount).toBe(3);
    expect(edge.core.catchUps.queuedCount).toBe(9);
    const gate = mailboxes.gate;
    mailboxes.gate = undefined;
    gate.resolve();
    await Promise.all(transports.map((transport, index) => transport.frame((frame) => frame["type"] === "synced", framesBefore[index])));
    expect(mailboxes.reads.length - readsBefore).toBe(12);
    expect(mailboxes.inFlightMax).toBe(3);
  });

  it("while a session waits its moment live events go out at once; what a lost delivery missed comes at its moment, in order, once", async () => {
    const { edge, clock, mailboxes } = edgeWithCatchUps(1000, 10);
    const [transport] = await syncedSessions(edge, 1);
    if (transport === undefined) throw new Error("no session");
    // A single session's moment: the seeded draw puts it somewhere in the window, not at once.
    edge.core.cellMembershipChanged("a");
    expect(edge.core.catchUps.waitingCount).toBe(1);
    // Live event 1 while the session waits: written at once, not held until the catch-up.
    const first = mailboxes.append("user0");
    edge.deliveries.publish("user0", first.seq, first.event);
    expect(await transport.frame((frame) => frame["type"] === "event")).toEqual({ type: "event", seq: 1, event: receipt(1) });
    // Event 2 is committed but its delivery died with a worker; event 3 arrives live during the catch-up's read.
    mailboxes.append("user0");
    mailboxes.gate = deferred<void>();
    const readsBefore = mailboxes.reads.length;
    clock.advanceTo(999);
    await settle();
    expect(mailboxes.reads.length).toBe(readsBefore + 1);
    const third = mailboxes.append("user0");
    edge.deliveries.publish("user0", third.seq, third.event);
    // Held by the cursor while the read runs: not written before event 2.
    expect(framesOfType(transport, "event").map((frame) => frame["seq"])).toEqual([1]);
    const gate = mailboxes.gate;
    mailboxes.gate = undefined;
    gate.resolve();
    await transport.frame((frame) => frame["type"] === "synced" && frame["seq"] === 3);
    expect(framesOfType(transport, "event").map((frame) => frame["seq"])).toEqual([1, 2, 3]);
  });

  it("drops the moment of a session that closes while it waits", async () => {
    const { edge, clock, mailboxes } = edgeWithCatchUps(1000, 10);
    const transports = await syncedSessions(edge, 5);
    edge.core.cellMembershipChanged("a");
    const waiting = edge.core.catchUps.waitingCount;
    for (const transport of transports) transport.peerClose();
    expect(edge.core.catchUps.waitingCount).toBe(0);
    const readsBefore = mailboxes.reads.length;
    clock.advanceTo(1000);
    await settle();
    expect(waiting).toBeGreaterThanOrEqual(4);
    expect(mailboxes.reads.length).toBe(readsBefore);
  });
});
