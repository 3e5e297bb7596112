// The migration coordinator end to end in one process: two cells' request handlers on memory stores, a
// directory and a router faked in memory, and faults injected where the coordinator must recover.
import { describe, expect, it } from "vitest";
import { RemoteError, UnavailableError } from "@cellwire/cluster";
import {
  mailboxEventId,
  type CellImportRequest,
  type CellReply,
  type CellRequest,
  type DirectoryEntry,
  type DirectoryEntryKind,
  type DirectoryMoveEntry,
  type MailboxEvent,
} from "@cellwire/protocol";
import { KeyedSerialQueue } from "./keyed-serial-queue.ts";
import { CellRequestHandler } from "./request-handler.ts";
import { MemoryConversationStore } from "./store/memory-store.ts";
import { messageEvent, newGroupId, newUserId, pageOf } from "./store/store-contract.ts";

const silentLogger = { info: () => undefined, warn: () => undefined, error: () => undefined };

class FakeDirectory {
  readonly entries = new Map<string, DirectoryEntry>();
  /** Set to make moveEntry fail: "unavailable" every time, or a RemoteError code once. */
  moveFailure: "unavailable" | "entry_changed" | undefined;
  moves = 0;

  place(kind: DirectoryEntryKind, id: string, cellId: string, epoch = 1): void {
    this.entries.set(`${kind}:${id}`, { kind, id, cellId, epoch });
  }

  async lookup(kind: DirectoryEntryKind, id: string): Promise<DirectoryEntry | undefined> {
    return this.entries.get(`${kind}:${id}`);
  }

  async moveEntry(move: Omit<DirectoryMoveEntry, "type">): Promise<DirectoryEntry> {
    this.moves += 1;
    if (this.moveFailure === "unavailable") throw new UnavailableError("directory_unavailable", "the directory did not answer");
    if (this.moveFailure === "entry_changed") throw new RemoteError("entry_changed", "another move won");
    const key = `${move.kind}:${move.id}`;
    const entry = this.entries.get(key);
    if (entry?.cellId === move.toCellId && entry.epoch === move.expectedEpoch + 1) return entry;
    if (entry === undefined || entry.cellId !== move.fromCellId || entry.epoch !== move.expectedEpoch) throw new RemoteError("entry_changed", "moved meanwhile");
    const moved = { ...entry, cellId: move.toCellId, epoch: entry.epoch + 1 };
    this.entries.set(key, moved);
    return moved;
  }
}

type Cell = { readonly store: MemoryConversationStore; readonly handler: CellRequestHandler; readonly request: (request: CellRequest) => Promise<CellReply>; readonly drained: readonly string[] };

/** Decides what the router does with one import page: pass it on (undefined), fail, or wait. */
type RouterHook = (request: CellImportRequest, pageIndex: number) => Promise<CellReply | "fail" | undefined> | CellReply | "fail" | undefined;

function world(precopyPagesMax = 100) {
  const directory = new FakeDirectory();
  let nowMs = 1000;
  const clock = { monotonicNowMs: () => nowMs };
  const cells = new Map<string, Cell>();
  let hook: RouterHook | undefined;
  const imports: CellImportRequest[] = [];
  const router = {
    request: async (cellId: string, request: CellImportRequest): Promise<CellReply> => {
      imports.push(request);
      nowMs += 5;
      const decided = await hook?.(request, imports.length - 1);
      if (decided === "fail") throw new UnavailableError("cell_unavailable", `cell ${cellId} did not answer`);
      if (decided !== undefined) return decided;
      const target = cells.get(cellId);
      if (target === undefined) throw new UnavailableError("cell_unavailable", `no cell ${cellId}`);
      return target.request(request);
    },
  };
  const cell = (cellId: string): Cell => {
    const store = new MemoryConversationStore();
    const drained: string[] = [];
    const handler = new CellRequestHandler({
      workerId: `${cellId}-1`,
      cellId,
      store,
      ownership: { snapshot: () => ({ ring: { ownerOf: () => `${cellId}-1` }, epoch: 1 }), leaseHeld: () => true },
      queue: new KeyedSerialQueue({ pendingPerKeyMax: 100, pendingTotalMax: 1000 }),
      relayOutbox: () => undefined,
      drainOutbox: (conversationId) => drained.push(conversationId),
      publishDelivery: () => undefined,
      logger: silentLogger,
      migration: { directory, router, clock, limits: { migrationsInFlightMax: 4, flipAttemptsMax: 2, precopyPagesMax } },
    });
    const request = async (input: CellRequest): Promise<CellReply> => {
      const replies: CellReply[] = [];
      await handler.handle(JSON.stringify(input), (reply) => replies.push(reply));
      const [reply] = replies;
      if (reply === undefined || replies.length !== 1) throw new Error(`expected one reply, got ${replies.length}`);
      return reply;
    };
    const created = { store, handler, request, drained };
    cells.set(cellId, created);
    return created;
  };
  return {
    directory,
    imports,
    source: cell("a"),
    target: cell("b"),
    setHook: (next: RouterHook | undefined) => void (hook = next),
  };
}

function append(userId: string, event: MailboxEvent): CellRequest {
  return { type: "cell.appendMailbox", userId, eventId: mailboxEventId(event), event };
}

async function mailboxOf(source: Cell, userId: string, count: number): Promise<MailboxEvent[]> {
  const events = Array.from({ length: count }, (_, index) => messageEvent(`m${index + 1}`));
  for (const event of events) expect(await source.request(append(userId, event))).toMatchObject({ type: "cell.appended" });
  return events;
}

describe("MigrationCoordinator", () => {
  it("moves a mailbox: copied in pages, flipped, activated there, tombstoned here", async () => {
    const { directory, source, target, imports } = world();
    const user = newUserId();
    directory.place("user", user, "a");
    const events = await mailboxOf(source, user, 250);
    const reply = await source.request({ type: "cell.migrate", kind: "user", id: user, toCellId: "b" });
    expect(reply).toMatchObject({ type: "cell.migrated", kind: "user", id: user, fromCellId: "a", toCellId: "b", epoch: 2, copiedItems: 250, alreadyMoved: false });
    // Every event went before the freeze: the pause holds only the (local) confirmation, the flip and the
    // activation; the fake clock moves 4 ms per cross-cell request and 1 ms per directory request.
    expect(reply.type === "cell.migrated" && reply.pauseMs).toBe(5);
    expect(imports.map((page) => [page.first, page.last, page.kind === "user" ? page.events.length : -1])).toEqual([
      [true, false, 0],
      [false, false, 200],
      [false, false, 50],
      [false, true, 0],
    ]);
    expect(await directory.lookup("user", user)).toEqual({ kind: "user", id: user, cellId: "b", epoch: 2 });
    const copied = pageOf(await target.store.mailboxPage({ userId: user, afterSeq: 0, limit: 200 }));
    expect(copied.headSeq).toBe(250);
    expect(copied.events.slice(0, 2)).toEqual(events.slice(0, 2).map((event, index) => ({ seq: index + 1, event })));
    expect(await source.request(append(user, messageEvent("late")))).toEqual({ type: "cell.moved", kind: "user", id: user, cellId: "b", epoch: 2 });
    expect(await target.request(append(user, messageEvent("new home")))).toMatchObject({ type: "cell.appended", seq: 251 });
    expect(await source.request({ type: "cell.stats" })).toEqual({ type: "cell.stats", cellId: "a", users: 0, conversations: 0, outboxRows: 0, frozen: 0 });
  });

  it("moves a conversation with its members, messages and pending outbox rows", async () => {
    const { directory, source, target } = world();
    const conversationId = newGroupId();
    directory.place("conversation", conversationId, "a");
    await source.request({ type: "cell.createGroup", creatorUserId: "alice", conversationId, title: "team", memberUserIds: ["bob"] });
    for (let index = 1; index <= 3; index++) {
      await source.request({ type: "cell.send", senderUserId: "alice", senderDeviceId: "phone", conversationId, clientMessageId: `c${index}`, body: `m${index}` });
    }
    const reply = await source.request({ type: "cell.migrate", kind: "conversation", id: conversationId, toCellId: "b" });
    expect(reply).toMatchObject({ type: "cell.migrated", copiedItems: 3, epoch: 2 });
    const history = await target.request({ type: "cell.history", userId: "bob", conversationId, beforeSeq: null, limit: 10 });
    expect(history.type === "cell.historyPage" && history.messages.map((message) => message.body)).toEqual(["m1", "m2", "m3"]);
    // The outbox rows (none relayed in this test) now wait in the new home.
    expect((await target.store.pendingOutbox({ olderThanMs: 0, limit: 100, afterId: 0, conversationId })).entries).toHaveLength(6);
    expect((await source.store.pendingOutbox({ olderThanMs: 0, limit: 100, afterId: 0, conversationId })).entries).toHaveLength(0);
    // The new home relays them as soon as the conversation is active there, not at its next sweep.
    expect(target.drained).toEqual([conversationId]);
    // A retried send dedupes in the new home; the old one names it.
    const retry = { type: "cell.send", senderUserId: "alice", senderDeviceId: "phone", conversationId, clientMessageId: "c2", body: "m2" } as const;
    expect(await target.request(retry)).toMatchObject({ type: "cell.stored", deduplicated: true, message: { seq: 2 } });
    expect(await source.request(retry)).toEqual({ type: "cell.moved", kind: "conversation", id: conversationId, cellId: "b", epoch: 2 });
    expect(await source.request({ type: "cell.openDirect", userId: "alice", peerUserId: "bob", conversationId: "d-x" })).toMatchObject({ type: "cell.error" });
  });

  it("unfreezes the key when a page of the copy fails, so nothing moved", async () => {
    const { directory, source, setHook } = world();
    const user = newUserId();
    directory.place("user", user, "a");
    await mailboxOf(source, user, 3);
    setHook((_request, index) => (index === 1 ? "fail" : undefined));
    const failed = await source.request({ type: "cell.migrate", kind: "user", id: user, toCellId: "b" });
    expect(failed).toMatchObject({ type: "cell.error", code: "cell_unavailable" });
    expect(directory.moves).toBe(0);
    expect(await source.store.migrationState({ kind: "user", id: user })).toMatchObject({ state: "active" });
    expect(await source.request(append(user, messageEvent("still here")))).toMatchObject({ type: "cell.appended", seq: 4 });
  });

  it("unfreezes the key when the directory refuses the flip and still has it here", async () => {
    const { directory, source, target } = world();
    const user = newUserId();
    directory.place("user", user, "a");
    await mailboxOf(source, user, 2);
    directory.moveFailure = "entry_changed";
    expect(await source.request({ type: "cell.migrate", kind: "user", id: user, toCellId: "b" })).toMatchObject({ type: "cell.error", code: "entry_changed" });
    expect(await source.request(append(user, messageEvent("still here")))).toMatchObject({ type: "cell.appended", seq: 3 });
    // The target's copy stays importing (nobody routes there) until the next attempt's first page resets it.
    expect(await target.request({ type: "cell.mailboxPage", userId: user, afterSeq: 0, limit: 10 })).toMatchObject({ type: "cell.error", code: "moving" });
    directory.moveFailure = undefined;
    expect(await source.request({ type: "cell.migrate", kind: "user", id: user, toCellId: "b" })).toMatchObject({ type: "cell.migrated", copiedItems: 3 });
    expect(pageOf(await target.store.mailboxPage({ userId: user, afterSeq: 0, limit: 10 })).headSeq).toBe(3);
  });

  it("keeps the key frozen when the flip's outcome is unknown, and a retry finishes the move", async () => {
    const { directory, source } = world();
    const user = newUserId();
    directory.place("user", user, "a");
    await mailboxOf(source, user, 2);
    directory.moveFailure = "unavailable";
    expect(await source.request({ type: "cell.migrate", kind: "user", id: user, toCellId: "b" })).toMatchObject({ type: "cell.error", code: "directory_unavailable" });
    expect(directory.moves).toBe(2);
    expect(await source.request(append(user, messageEvent("during")))).toMatchObject({ type: "cell.error", code: "moving" });
    directory.moveFailure = undefined;
    expect(await source.request({ type: "cell.migrate", kind: "user", id: user, toCellId: "b" })).toMatchObject({ type: "cell.migrated", epoch: 2 });
  });

  it("finishes a move whose flip went through but whose activation did not", async () => {
    const { directory, source, target, setHook } = world();
    const user = newUserId();
    directory.place("user", user, "a");
    await mailboxOf(source, user, 2);
    setHook((request) => (request.last ? "fail" : undefined));
    expect(await source.request({ type: "cell.migrate", kind: "user", id: user, toCellId: "b" })).toMatchObject({ type: "cell.error", code: "cell_unavailable" });
    expect(await directory.lookup("user", user)).toMatchObject({ cellId: "b", epoch: 2 });
    // Neither cell takes writes meanwhile: frozen here, importing there.
    expect(await source.request(append(user, messageEvent("x")))).toMatchObject({ code: "moving" });
    expect(await target.request(append(user, messageEvent("x")))).toMatchObject({ code: "moving" });
    setHook(undefined);
    expect(await source.request({ type: "cell.migrate", kind: "user", id: user, toCellId: "b" })).toMatchObject({
      type: "cell.migrated",
      toCellId: "b",
      epoch: 2,
      copiedItems: 0,
      alreadyMoved: false,
    });
    expect(await target.request(append(user, messageEvent("y")))).toMatchObject({ type: "cell.appended", seq: 3 });
    expect(await source.request(append(user, messageEvent("y")))).toMatchObject({ type: "cell.moved", cellId: "b", epoch: 2 });
    // Asked once more: already done.
    expect(await source.request({ type: "cell.migrate", kind: "user", id: user, toCellId: "b" })).toMatchObject({ type: "cell.migrated", alreadyMoved: true, epoch: 2 });
  });

  it("copies in the pause what the pre-copy left: events appended after its last page", async () => {
    // One page before the freeze, so the events appended while it travels are the tail's.
    const { directory, source, target, imports, setHook } = world(1);
    const user = newUserId();
    directory.place("user", user, "a");
    await mailboxOf(source, user, 2);
    setHook(async (_request, index) => {
      // While the first events page is on its way the key is still writable: three more land in it.
      if (index === 1) for (const text of ["x", "y", "z"]) expect(await source.request(append(user, messageEvent(text)))).toMatchObject({ type: "cell.appended" });
      return undefined;
    });
    const reply = await source.request({ type: "cell.migrate", kind: "user", id: user, toCellId: "b" });
    expect(reply).toMatchObject({ type: "cell.migrated", copiedItems: 5 });
    expect(imports.map((page) => [page.first, page.last, page.kind === "user" ? page.events.map((event) => event.seq) : []])).toEqual([
      [true, false, []],
      [false, false, [1, 2]],
      [false, false, [3, 4, 5]],
      [false, true, []],
    ]);
    expect(pageOf(await target.store.mailboxPage({ userId: user, afterSeq: 0, limit: 10 })).headSeq).toBe(5);
  });

  it("answers moving to a second migrate of the key, and to writes during the pause at once", async () => {
    const { directory, source, setHook } = world();
    const user = newUserId();
    directory.place("user", user, "a");
    await mailboxOf(source, user, 2);
    let release: () => void = () => undefined;
    const held = new Promise<void>((resolve) => (release = resolve));
    let copying: () => void = () => undefined;
    const copyStarted = new Promise<void>((resolve) => (copying = resolve));
    // Pages 0 and 1 are the pre-copy (the key still writable); page 2 is the activation, after the freeze.
    setHook(async (_request, index) => {
      if (index === 2) {
        copying();
        await held;
      }
      return undefined;
    });
    const first = source.request({ type: "cell.migrate", kind: "user", id: user, toCellId: "b" });
    await copyStarted;
    expect(await source.request({ type: "cell.migrate", kind: "user", id: user, toCellId: "b" })).toMatchObject({ type: "cell.error", code: "moving" });
    // The move holds no turn of the key: a write is refused without waiting for it, and reads are served.
    expect(await source.request(append(user, messageEvent("during")))).toMatchObject({ type: "cell.error", code: "moving" });
    expect(await source.request({ type: "cell.mailboxPage", userId: user, afterSeq: 0, limit: 10 })).toMatchObject({ type: "cell.mailboxEvents", headSeq: 2 });
    // A stopping worker waits for the move: whenIdle settles only once it has answered.
    let idle = false;
    const whenIdle = source.handler.whenMigrationsIdle().then(() => (idle = true));
    await Promise.resolve();
    expect(idle).toBe(false);
    release();
    expect(await first).toMatchObject({ type: "cell.migrated" });
    await whenIdle;
    expect(idle).toBe(true);
  });

  it("answers cell.moved for a key homed elsewhere, and refuses a move to this cell or of an unknown key", async () => {
    const { directory, source } = world();
    const conversationId = newGroupId();
    directory.place("conversation", conversationId, "c", 4);
    expect(await source.request({ type: "cell.migrate", kind: "conversation", id: conversationId, toCellId: "b" })).toEqual({
      type: "cell.moved",
      kind: "conversation",
      id: conversationId,
      cellId: "c",
      epoch: 4,
    });
    expect(await source.request({ type: "cell.migrate", kind: "user", id: newUserId(), toCellId: "b" })).toMatchObject({ type: "cell.error", code: "not_found" });
    expect(await source.request({ type: "cell.migrate", kind: "user", id: newUserId(), toCellId: "a" })).toMatchObject({ type: "cell.error", code: "invalid_field" });
    // A conversation placed here but never created has nothing to move.
    const empty = newGroupId();
    directory.place("conversation", empty, "a");
    expect(await source.request({ type: "cell.migrate", kind: "conversation", id: empty, toCellId: "b" })).toMatchObject({ type: "cell.error", code: "not_found" });
  });

  it("answers cell.stats on any worker, whoever owns the stats key", async () => {
    const store = new MemoryConversationStore();
    await store.appendMailbox({ userId: "bob", eventId: "e", event: messageEvent(), epoch: 1 });
    const handler = new CellRequestHandler({
      workerId: "a-1",
      cellId: "a",
      store,
      ownership: { snapshot: () => ({ ring: { ownerOf: () => "a-2" }, epoch: 1 }), leaseHeld: () => false },
      queue: new KeyedSerialQueue({ pendingPerKeyMax: 1, pendingTotalMax: 1 }),
      relayOutbox: () => undefined,
      publishDelivery: () => undefined,
      logger: silentLogger,
    });
    const replies: CellReply[] = [];
    await handler.handle(JSON.stringify({ type: "cell.stats" }), (reply) => replies.push(reply));
    expect(replies).toEqual([{ type: "cell.stats", cellId: "a", users: 1, conversations: 0, outboxRows: 0, frozen: 0 }]);
  });
});
