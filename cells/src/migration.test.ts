// The migration coordinator end to end in one process: two cells' request handlers on memory stores, a
// directory and a router faked in memory, and faults injected where the coordinator must recover.
import { describe, expect, it } from "vitest";
import { RemoteError, UnavailableError, devDirectConversationKey, directConversationId } from "@cellwire/cluster";
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
import { FrozenKeySweeper } from "./frozen-key-sweeper.ts";
import type { StoredMessage } from "./message-publisher.ts";
import type { CellRequestHandler } from "./request-handler.ts";
import { handlerHarness, silentLogger } from "../test/request-handler.harness.ts";
import { MemoryConversationStore } from "../test/memory-store.ts";
import { joinedEvent, newGroupId, newUserId, pageOf } from "../test/store-contract.ts";

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
    if (entry === undefined || entry.cellId !== move.fromCellId || entry.epoch !== move.expectedEpoch)
      throw new RemoteError("entry_changed", "moved meanwhile");
    const moved = { ...entry, cellId: move.toCellId, epoch: entry.epoch + 1 };
    this.entries.set(key, moved);
    return moved;
  }
}

type Cell = {
  readonly store: MemoryConversationStore;
  readonly handler: CellRequestHandler;
  readonly request: (request: CellRequest) => Promise<CellReply>;
  readonly drained: readonly string[];
  /** Messages this cell's worker stored and handed to its publisher. */
  readonly published: readonly StoredMessage[];
};

/** Decides what the router does with one import page: pass it on (undefined), fail, or wait. */
type RouterHook = (
  request: CellImportRequest,
  pageIndex: number,
) => Promise<CellReply | "fail" | undefined> | CellReply | "fail" | undefined;

function world(precopyPagesMax = 100) {
  const directory = new FakeDirectory();
  let nowMs = 1000;
  const clock = { monotonicNowMs: () => nowMs };
  const cells = new Map<string, Cell>();
  let hook: RouterHook | undefined;
  const imports: CellImportRequest[] = [];
  /** Each cell.migrate's answer as the worker's metrics saw it: `migrated <pauseMs>`, or the error code. */
  const migrationsEnded: string[] = [];
  const metrics = {
    migrationEnded: (reply: CellReply) =>
      void migrationsEnded.push(
        reply.type === "cell.migrated" ? `migrated ${reply.pauseMs}` : reply.type === "cell.error" ? reply.code : reply.type,
      ),
  };
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
    // The relay is left out (its rows stay in the outbox), as if every relay failed.
    const { handler, request, published } = handlerHarness({
      store,
      workerId: `${cellId}-1`,
      cellId,
      drainOutbox: (conversationId) => void drained.push(conversationId),
      migration: { directory, router, clock, limits: { migrationsInFlightMax: 4, flipAttemptsMax: 2, precopyPagesMax }, metrics },
    });
    const created = { store, handler, request, drained, published };
    cells.set(cellId, created);
    return created;
  };
  return {
    directory,
    imports,
    migrationsEnded,
    clock,
    source: cell("a"),
    target: cell("b"),
    setHook: (next: RouterHook | undefined) => void (hook = next),
  };
}

function append(userId: string, event: MailboxEvent): CellRequest {
  return { type: "cell.appendMailbox", userId, eventId: mailboxEventId(event), event };
}

/** The incarnation a cell's mailbox page names for the user (undefined: no mailbox, or not a page). */
async function incarnationIn(cell: Cell, userId: string): Promise<string | undefined> {
  const reply = await cell.request({ type: "cell.mailboxPage", userId, afterSeq: 0, limit: 0 });
  return reply.type === "cell.mailboxEvents" ? reply.incarnation : undefined;
}

async function mailboxOf(source: Cell, userId: string, count: number): Promise<MailboxEvent[]> {
  const events = Array.from({ length: count }, (_, index) => joinedEvent(`m${index + 1}`));
  for (const event of events) expect(await source.request(append(userId, event))).toMatchObject({ type: "cell.appended" });
  return events;
}

describe("MigrationCoordinator", () => {
  it("moves a mailbox: copied in pages, flipped, activated there, tombstoned here", async () => {
    const { directory, source, target, imports, migrationsEnded } = world();
    const user = newUserId();
    directory.place("user", user, "a");
    const events = await mailboxOf(source, user, 250);
    const incarnation = await incarnationIn(source, user);
    expect(incarnation).toMatch(/^[0-9a-f-]{36}$/);
    const reply = await source.request({ type: "cell.migrate", kind: "user", id: user, toCellId: "b" });
    expect(reply).toMatchObject({
      type: "cell.migrated",
      kind: "user",
      id: user,
      fromCellId: "a",
      toCellId: "b",
      epoch: 2,
      copiedItems: 250,
      alreadyMoved: false,
    });
    // Every event went before the freeze: the pause holds only the (local) confirmation, the flip and the
    // activation; the fake clock moves 4 ms per cross-cell request and 1 ms per directory request.
    expect(reply.type === "cell.migrated" && reply.pauseMs).toBe(5);
    expect(migrationsEnded).toEqual(["migrated 5"]);
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
    expect(await source.request(append(user, joinedEvent("late")))).toEqual({
      type: "cell.moved",
      kind: "user",
      id: user,
      cellId: "b",
      epoch: 2,
    });
    expect(await target.request(append(user, joinedEvent("new home")))).toMatchObject({ type: "cell.appended", seq: 251 });
    // The same mailbox in its new home (decision 0021): devices resume there without a resync.
    expect(await incarnationIn(target, user)).toBe(incarnation);
    expect(await source.request({ type: "cell.stats" })).toEqual({
      type: "cell.stats",
      cellId: "a",
      users: 0,
      conversations: 0,
      outboxRows: 0,
      frozen: 0,
    });
  });

  it("moves a conversation with its members (and their join points), messages and pending outbox rows", async () => {
    const { directory, source, target } = world();
    const conversationId = newGroupId();
    directory.place("conversation", conversationId, "a");
    await source.request({ type: "cell.createGroup", creatorUserId: "alice", conversationId, title: "team", memberUserIds: ["bob"] });
    for (let index = 1; index <= 3; index++) {
      await source.request({
        type: "cell.send",
        senderUserId: "alice",
        senderDeviceId: "phone",
        conversationId,
        clientMessageId: `c${index}`,
        body: `m${index}`,
      });
    }
    await source.request({ type: "cell.addMembers", userId: "alice", conversationId, userIds: ["dave"] });
    expect(await source.request({ type: "cell.receipt", userId: "bob", conversationId, position: "read", seq: 2 })).toMatchObject({
      advanced: true,
    });
    const reply = await source.request({ type: "cell.migrate", kind: "conversation", id: conversationId, toCellId: "b" });
    expect(reply).toMatchObject({ type: "cell.migrated", copiedItems: 3, epoch: 2 });
    const history = await target.request({ type: "cell.history", userId: "bob", conversationId, beforeSeq: null, limit: 10 });
    expect(history.type === "cell.historyPage" && history.messages.map((message) => message.body)).toEqual(["m1", "m2", "m3"]);
    // The outbox rows (none relayed in this test): the joined events of the three members and bob's receipt.
    const moved = (await target.store.pendingOutbox({ olderThanMs: 0, limit: 100, afterId: 0, conversationId })).entries;
    expect(moved.map((entry) => `${entry.event.kind}:${entry.recipientUserId}`)).toEqual([
      "joined:alice",
      "joined:bob",
      "joined:dave",
      "receipt:alice",
      "receipt:bob",
      "receipt:dave",
    ]);
    expect((await source.store.pendingOutbox({ olderThanMs: 0, limit: 100, afterId: 0, conversationId })).entries).toHaveLength(0);
    // The new home relays them as soon as the conversation is active there, not at its next sweep.
    expect(target.drained).toEqual([conversationId]);
    // dave's join point came along: his devices read the log after seq 3 there.
    expect(await target.request({ type: "cell.messagesAfter", userId: "dave", conversationId, afterSeq: null, limit: 10 })).toMatchObject({
      type: "cell.messages",
      afterSeq: 3,
      messages: [],
      headSeq: 3,
    });
    // A retried send dedupes in the new home; the old one names it.
    const retry = {
      type: "cell.send",
      senderUserId: "alice",
      senderDeviceId: "phone",
      conversationId,
      clientMessageId: "c2",
      body: "m2",
    } as const;
    expect(await target.request(retry)).toMatchObject({ type: "cell.stored", deduplicated: true, message: { seq: 2 } });
    expect(await source.request(retry)).toEqual({ type: "cell.moved", kind: "conversation", id: conversationId, cellId: "b", epoch: 2 });
    expect(await source.request({ type: "cell.messagesAfter", userId: "dave", conversationId, afterSeq: null, limit: 10 })).toMatchObject({
      type: "cell.moved",
      cellId: "b",
    });
    // The new home stores and publishes what follows; the old one published only what it stored.
    expect(await target.request({ ...retry, clientMessageId: "c4", body: "m4" })).toMatchObject({
      type: "cell.stored",
      message: { seq: 4 },
    });
    expect(source.published.map((stored) => stored.message.body)).toEqual(["m1", "m2", "m3"]);
    expect(target.published.map((stored) => stored.message.body)).toEqual(["m4"]);
    expect(await source.request({ type: "cell.openDirect", userId: "alice", peerUserId: "bob", conversationId: "d-x" })).toMatchObject({
      type: "cell.error",
    });
  });

  it("takes a conversation's dead letters along as outbox rows, ahead of their recipient's newer rows (nothing left behind that no owner relays)", async () => {
    const { directory, source, target } = world();
    const conversationId = newGroupId();
    directory.place("conversation", conversationId, "a");
    await source.request({ type: "cell.createGroup", creatorUserId: "alice", conversationId, title: "team", memberUserIds: ["bob"] });
    // bob's joined event was dead-lettered (his home cell was gone); a receipt written later stays in the outbox.
    expect(await source.store.deadLetterOutbox({ conversationId, recipientUserId: "bob", reason: "cell c is gone" })).toBe(1);
    await source.request({
      type: "cell.send",
      senderUserId: "alice",
      senderDeviceId: "phone",
      conversationId,
      clientMessageId: "c1",
      body: "m1",
    });
    expect(await source.request({ type: "cell.receipt", userId: "alice", conversationId, position: "read", seq: 1 })).toMatchObject({
      advanced: true,
    });
    expect(await source.request({ type: "cell.migrate", kind: "conversation", id: conversationId, toCellId: "b" })).toMatchObject({
      type: "cell.migrated",
    });
    const moved = (await target.store.pendingOutbox({ olderThanMs: 0, limit: 100, afterId: 0, conversationId })).entries;
    const bobs = moved.filter((entry) => entry.recipientUserId === "bob").map((entry) => entry.event.kind);
    expect(bobs).toEqual(["joined", "receipt"]);
    expect(
      (await target.store.deadLetters({ afterId: 0, limit: 100 })).filter((deadLetter) => deadLetter.conversationId === conversationId),
    ).toEqual([]);
    expect(
      (await source.store.deadLetters({ afterId: 0, limit: 100 })).filter((deadLetter) => deadLetter.conversationId === conversationId),
    ).toEqual([]);
  });

  it("unfreezes the key when a page of the copy fails, so nothing moved", async () => {
    const { directory, source, setHook, migrationsEnded } = world();
    const user = newUserId();
    directory.place("user", user, "a");
    await mailboxOf(source, user, 3);
    setHook((_request, index) => (index === 1 ? "fail" : undefined));
    const failed = await source.request({ type: "cell.migrate", kind: "user", id: user, toCellId: "b" });
    expect(failed).toMatchObject({ type: "cell.error", code: "cell_unavailable" });
    expect(migrationsEnded).toEqual(["cell_unavailable"]);
    expect(directory.moves).toBe(0);
    expect(await source.store.migrationState({ kind: "user", id: user })).toMatchObject({ state: "active" });
    expect(await source.request(append(user, joinedEvent("still here")))).toMatchObject({ type: "cell.appended", seq: 4 });
  });

  it("unfreezes the key when the directory refuses the flip and still has it here", async () => {
    const { directory, source, target } = world();
    const user = newUserId();
    directory.place("user", user, "a");
    await mailboxOf(source, user, 2);
    directory.moveFailure = "entry_changed";
    expect(await source.request({ type: "cell.migrate", kind: "user", id: user, toCellId: "b" })).toMatchObject({
      type: "cell.error",
      code: "entry_changed",
    });
    expect(await source.request(append(user, joinedEvent("still here")))).toMatchObject({ type: "cell.appended", seq: 3 });
    // The target's copy stays importing (nobody routes there) until the next attempt's first page resets it.
    expect(await target.request({ type: "cell.mailboxPage", userId: user, afterSeq: 0, limit: 10 })).toMatchObject({
      type: "cell.error",
      code: "moving",
    });
    directory.moveFailure = undefined;
    expect(await source.request({ type: "cell.migrate", kind: "user", id: user, toCellId: "b" })).toMatchObject({
      type: "cell.migrated",
      copiedItems: 3,
    });
    expect(pageOf(await target.store.mailboxPage({ userId: user, afterSeq: 0, limit: 10 })).headSeq).toBe(3);
  });

  it("keeps the key frozen when the flip's outcome is unknown, and a retry finishes the move", async () => {
    const { directory, source } = world();
    const user = newUserId();
    directory.place("user", user, "a");
    await mailboxOf(source, user, 2);
    directory.moveFailure = "unavailable";
    expect(await source.request({ type: "cell.migrate", kind: "user", id: user, toCellId: "b" })).toMatchObject({
      type: "cell.error",
      code: "directory_unavailable",
    });
    expect(directory.moves).toBe(2);
    expect(await source.request(append(user, joinedEvent("during")))).toMatchObject({ type: "cell.error", code: "moving" });
    directory.moveFailure = undefined;
    expect(await source.request({ type: "cell.migrate", kind: "user", id: user, toCellId: "b" })).toMatchObject({
      type: "cell.migrated",
      epoch: 2,
    });
  });

  it("finishes a move whose flip went through but whose activation did not", async () => {
    const { directory, source, target, setHook } = world();
    const user = newUserId();
    directory.place("user", user, "a");
    await mailboxOf(source, user, 2);
    const incarnation = await incarnationIn(source, user);
    setHook((request) => (request.last ? "fail" : undefined));
    expect(await source.request({ type: "cell.migrate", kind: "user", id: user, toCellId: "b" })).toMatchObject({
      type: "cell.error",
      code: "cell_unavailable",
    });
    expect(await directory.lookup("user", user)).toMatchObject({ cellId: "b", epoch: 2 });
    // Neither cell takes writes meanwhile: frozen here, importing there.
    expect(await source.request(append(user, joinedEvent("x")))).toMatchObject({ code: "moving" });
    expect(await target.request(append(user, joinedEvent("x")))).toMatchObject({ code: "moving" });
    setHook(undefined);
    expect(await source.request({ type: "cell.migrate", kind: "user", id: user, toCellId: "b" })).toMatchObject({
      type: "cell.migrated",
      toCellId: "b",
      epoch: 2,
      copiedItems: 0,
      alreadyMoved: false,
    });
    expect(await target.request(append(user, joinedEvent("y")))).toMatchObject({ type: "cell.appended", seq: 3 });
    expect(await incarnationIn(target, user)).toBe(incarnation);
    expect(await source.request(append(user, joinedEvent("y")))).toMatchObject({ type: "cell.moved", cellId: "b", epoch: 2 });
    // Asked once more: already done.
    expect(await source.request({ type: "cell.migrate", kind: "user", id: user, toCellId: "b" })).toMatchObject({
      type: "cell.migrated",
      alreadyMoved: true,
      epoch: 2,
    });
  });

  it("copies in the pause what the pre-copy left: events appended after its last page", async () => {
    // One page before the freeze, so the events appended while it travels are the tail's.
    const { directory, source, target, imports, setHook } = world(1);
    const user = newUserId();
    directory.place("user", user, "a");
    await mailboxOf(source, user, 2);
    setHook(async (_request, index) => {
      // While the first events page is on its way the key is still writable: three more land in it.
      if (index === 1)
        for (const text of ["x", "y", "z"])
          expect(await source.request(append(user, joinedEvent(text)))).toMatchObject({ type: "cell.appended" });
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
    expect(await source.request({ type: "cell.migrate", kind: "user", id: user, toCellId: "b" })).toMatchObject({
      type: "cell.error",
      code: "moving",
    });
    // The move holds no turn of the key: a write is refused without waiting for it, and reads are served.
    expect(await source.request(append(user, joinedEvent("during")))).toMatchObject({ type: "cell.error", code: "moving" });
    expect(await source.request({ type: "cell.mailboxPage", userId: user, afterSeq: 0, limit: 10 })).toMatchObject({
      type: "cell.mailboxEvents",
      headSeq: 2,
    });
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
    expect(await source.request({ type: "cell.migrate", kind: "user", id: newUserId(), toCellId: "b" })).toMatchObject({
      type: "cell.error",
      code: "not_found",
    });
    expect(await source.request({ type: "cell.migrate", kind: "user", id: newUserId(), toCellId: "a" })).toMatchObject({
      type: "cell.error",
      code: "invalid_field",
    });
  });

  it("moves a conversation placed here but never created: no copy, the flip and a tombstone; the target creates it when asked", async () => {
    const { directory, source, target, imports } = world();
    const conversationId = directConversationId(devDirectConversationKey, "alice", "bob");
    directory.place("conversation", conversationId, "a");
    expect(await source.request({ type: "cell.migrate", kind: "conversation", id: conversationId, toCellId: "b" })).toMatchObject({
      type: "cell.migrated",
      fromCellId: "a",
      toCellId: "b",
      epoch: 2,
      copiedItems: 0,
      alreadyMoved: false,
    });
    expect(imports).toEqual([]);
    expect(await directory.lookup("conversation", conversationId)).toMatchObject({ cellId: "b", epoch: 2 });
    // A stale creation reaching the old cell is sent on, not served there.
    const open = { type: "cell.openDirect", userId: "alice", peerUserId: "bob", conversationId } as const;
    expect(await source.request(open)).toEqual({ type: "cell.moved", kind: "conversation", id: conversationId, cellId: "b", epoch: 2 });
    expect(await target.request(open)).toMatchObject({
      type: "cell.conversation",
      conversation: { conversationId, kind: "direct", memberUserIds: ["alice", "bob"] },
    });
    expect(await source.request({ type: "cell.stats" })).toMatchObject({ conversations: 0, frozen: 0 });
    // Asked again: already done.
    expect(await source.request({ type: "cell.migrate", kind: "conversation", id: conversationId, toCellId: "b" })).toMatchObject({
      type: "cell.migrated",
      alreadyMoved: true,
    });
  });

  it("copies a conversation created between the pre-copy (no row yet) and the freeze, rather than skipping the copy", async () => {
    const { directory, source, target, imports } = world();
    const conversationId = newGroupId();
    directory.place("conversation", conversationId, "a");
    const exportConversation = source.store.exportConversation.bind(source.store);
    let exports = 0;
    source.store.exportConversation = async (id) => {
      const exported = await exportConversation(id);
      exports += 1;
      // Right after the pre-copy found nothing: the creation and a send reach the cell before the freeze.
      if (exports === 1) {
        expect(exported).toBeUndefined();
        await source.request({ type: "cell.createGroup", creatorUserId: "alice", conversationId, title: "late", memberUserIds: ["bob"] });
        await source.request({
          type: "cell.send",
          senderUserId: "alice",
          senderDeviceId: "phone",
          conversationId,
          clientMessageId: "c1",
          body: "first",
        });
      }
      return exported;
    };
    expect(await source.request({ type: "cell.migrate", kind: "conversation", id: conversationId, toCellId: "b" })).toMatchObject({
      type: "cell.migrated",
      copiedItems: 1,
    });
    expect(imports.map((page) => [page.first, page.last])).toEqual([
      [true, false],
      [false, false],
      [false, true],
    ]);
    const history = await target.request({ type: "cell.history", userId: "bob", conversationId, beforeSeq: null, limit: 10 });
    expect(history.type === "cell.historyPage" && history.messages.map((message) => message.body)).toEqual(["first"]);
    expect(await target.request({ type: "cell.members", conversationId, userId: "bob" })).toMatchObject({
      memberUserIds: ["alice", "bob"],
    });
  });

  it("drops the placeholder when the flip is refused, so the conversation can still be created here", async () => {
    const { directory, source } = world();
    const conversationId = newGroupId();
    directory.place("conversation", conversationId, "a");
    directory.moveFailure = "entry_changed";
    expect(await source.request({ type: "cell.migrate", kind: "conversation", id: conversationId, toCellId: "b" })).toMatchObject({
      code: "entry_changed",
    });
    expect(await source.store.migrationState({ kind: "conversation", id: conversationId })).toBeUndefined();
    expect(
      await source.request({ type: "cell.createGroup", creatorUserId: "alice", conversationId, title: "t", memberUserIds: [] }),
    ).toMatchObject({
      type: "cell.conversation",
      conversation: { kind: "group", memberUserIds: ["alice"] },
    });
  });

  it("finishes a placeholder's move whose flip went through: only the tombstone is left, nothing is activated", async () => {
    const { directory, source, imports } = world();
    const conversationId = newGroupId();
    // A mover froze the placeholder and flipped the entry, then died.
    expect(await source.store.freeze({ kind: "conversation", id: conversationId, toCellId: "b", epoch: 1 })).toMatchObject({
      placeholder: true,
    });
    directory.place("conversation", conversationId, "b", 2);
    expect(await source.request({ type: "cell.migrate", kind: "conversation", id: conversationId, toCellId: "b" })).toMatchObject({
      type: "cell.migrated",
      epoch: 2,
      alreadyMoved: false,
    });
    expect(imports).toEqual([]);
    expect(await source.store.migrationState({ kind: "conversation", id: conversationId })).toMatchObject({
      state: "moved",
      movingToCellId: "b",
      movedEpoch: 2,
    });
  });

  it("answers cell.stats on any worker, whoever owns the stats key", async () => {
    const store = new MemoryConversationStore();
    await store.appendMailbox({ userId: "bob", eventId: "e", event: joinedEvent(), epoch: 1 });
    const { request } = handlerHarness({ store, pendingPerKeyMax: 1, ring: { ownerOf: () => "a-2", leaseHeld: () => false } });
    expect(await request({ type: "cell.stats" })).toEqual({
      type: "cell.stats",
      cellId: "a",
      users: 1,
      conversations: 0,
      outboxRows: 0,
      frozen: 0,
    });
  });
});

describe("FrozenKeySweeper resuming moves through the coordinator", () => {
  const sweepIntervalMs = 5000;

  /** A sweeper of cell a, owning every key, on its own fake clock. */
  function sweeperOf(source: Cell) {
    let nowMs = 0;
    const sweeper = new FrozenKeySweeper({
      store: source.store,
      owns: () => true,
      migrating: (ringKey) => source.handler.isMigrating(ringKey),
      migrate: (request) => source.handler.resumeMigration(request),
      clock: { monotonicNowMs: () => nowMs },
      logger: silentLogger,
      limits: { sweepIntervalMs, keysMax: 100, resumesMax: 4 },
    });
    return { sweeper, advance: () => void (nowMs += sweepIntervalMs) };
  }

  it("redoes a move whose mover died between the freeze and the flip: the target's partial copy is reset", async () => {
    const { directory, source, target } = world();
    const user = newUserId();
    directory.place("user", user, "a");
    const events = await mailboxOf(source, user, 3);
    // The dead mover froze the key and copied a stale first event there, then stopped.
    expect(await source.store.freeze({ kind: "user", id: user, toCellId: "b", epoch: 1 })).toMatchObject({ outcome: "frozen" });
    const base = { type: "cell.import", kind: "user", id: user, fromCellId: "a", last: false, lastSeq: 0, floorSeq: 0 } as const;
    expect(await target.request({ ...base, first: true, events: [] })).toMatchObject({ state: "importing" });
    const staleEvent = joinedEvent("stale");
    const stale = { seq: 1, eventId: mailboxEventId(staleEvent), event: staleEvent };
    expect(await target.request({ ...base, first: false, events: [stale] })).toMatchObject({ state: "importing" });

    const { sweeper, advance } = sweeperOf(source);
    expect(await sweeper.sweep()).toEqual([]);
    expect(await source.request(append(user, joinedEvent("still frozen")))).toMatchObject({ code: "moving" });
    advance();
    const [resumed, ...others] = await sweeper.sweep();
    expect(others).toEqual([]);
    expect(resumed?.reply).toMatchObject({ type: "cell.migrated", toCellId: "b", epoch: 2, copiedItems: 3 });
    expect(pageOf(await target.store.mailboxPage({ userId: user, afterSeq: 0, limit: 10 })).events).toEqual(
      events.map((event, index) => ({ seq: index + 1, event })),
    );
    expect(await source.request(append(user, joinedEvent("late")))).toMatchObject({ type: "cell.moved", cellId: "b", epoch: 2 });
    // Nothing frozen is left for the next sweep.
    advance();
    expect(await sweeper.sweep()).toEqual([]);
  });

  it("finishes a move whose mover died after the flip: activation there, tombstone here", async () => {
    const { directory, source, target, setHook } = world();
    const user = newUserId();
    directory.place("user", user, "a");
    await mailboxOf(source, user, 2);
    // The activation never arrives: the move stops after the flip, as if its worker died there.
    setHook((request) => (request.last ? "fail" : undefined));
    expect(await source.request({ type: "cell.migrate", kind: "user", id: user, toCellId: "b" })).toMatchObject({
      code: "cell_unavailable",
    });
    setHook(undefined);
    const { sweeper, advance } = sweeperOf(source);
    await sweeper.sweep();
    advance();
    const resumed = await sweeper.sweep();
    expect(resumed.map((move) => move.reply)).toEqual([
      {
        type: "cell.migrated",
        kind: "user",
        id: user,
        fromCellId: "a",
        toCellId: "b",
        epoch: 2,
        pauseMs: expect.any(Number),
        copiedItems: 0,
        alreadyMoved: false,
      },
    ]);
    expect(await target.request(append(user, joinedEvent("new home")))).toMatchObject({ type: "cell.appended", seq: 3 });
  });

  it("leaves a key this worker is moving right now", async () => {
    const { directory, source, setHook } = world();
    const user = newUserId();
    directory.place("user", user, "a");
    await mailboxOf(source, user, 1);
    let release: () => void = () => undefined;
    const held = new Promise<void>((resolve) => (release = resolve));
    let activating: () => void = () => undefined;
    const frozenNow = new Promise<void>((resolve) => (activating = resolve));
    setHook(async (request) => {
      if (request.last) {
        activating();
        await held;
      }
      return undefined;
    });
    const moving = source.request({ type: "cell.migrate", kind: "user", id: user, toCellId: "b" });
    await frozenNow;
    const { sweeper, advance } = sweeperOf(source);
    await sweeper.sweep();
    advance();
    expect(await sweeper.sweep()).toEqual([]);
    release();
    expect(await moving).toMatchObject({ type: "cell.migrated" });
  });
});
