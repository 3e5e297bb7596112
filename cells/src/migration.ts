// Live migration of one key (a user's mailbox or a conversation) out of this cell, driven by the owner of
// the key here on cell.migrate (docs/decisions/0008-live-migration.md):
//   1. look the key up in the directory (an entry already elsewhere is a move to finish, or cell.moved);
//   2. freeze it here, in its turn (writes answer `moving`, reads are still served);
//   3. copy it in pages to its owner in the target cell (cell.import; the first page resets whatever the
//      target held), outside the key's turn, so requests during the copy are refused at once, not queued;
//   4. flip the directory entry (directory.moveEntry, epoch + 1);
//   5. activate the copy (the `last` import page);
//   6. leave a tombstone here (state moved, the key's rows deleted), in its turn.
// Before the flip a failure unfreezes the key: nothing moved. After it, nothing is undone: the key stays
// frozen here and importing there until a retried cell.migrate finishes steps 5-6 (step 1 finds the entry
// on the target and the row here frozen toward it). Whenever the outcome of the flip is unknown, the key
// stays frozen too, so it is never writable in two cells.
import { RemoteError, UnavailableError, type Logger } from "@cellwire/cluster";
import {
  historyPageBytesMax,
  importPageItemsMax,
  ringKeyOf,
  type CellImportRequest,
  type CellMigrateRequest,
  type CellReply,
  type DirectoryEntry,
  type DirectoryEntryKind,
  type DirectoryMoveEntry,
  type ImportedOutboxEntry,
} from "@cellwire/protocol";
import { cellErrorReply, movedReply } from "./cell-error-reply.ts";
import { trimToPageBudget } from "./store/page-budget.ts";
import { describeError } from "./store/errors.ts";
import type { MigrationMetrics } from "./worker-metrics.ts";
import type { ConversationStore, Fenced, FreezeResult, MigrationKey, MigrationRefusal, MigrationStore } from "./store/store.ts";

/** The directory as migration needs it (DirectoryClient fits). */
export type MigrationDirectory = {
  readonly lookup: (kind: DirectoryEntryKind, id: string) => Promise<DirectoryEntry | undefined>;
  /** Throws RemoteError for a definite refusal (entry_changed, not_found, unknown_cell), UnavailableError when unanswered. */
  readonly moveEntry: (move: Omit<DirectoryMoveEntry, "type">) => Promise<DirectoryEntry>;
};

/** Requests to the owner of a key in another cell (Router.toCell fits); throws UnavailableError when unanswered. */
export type MigrationRouter = { readonly request: (cellId: string, request: CellImportRequest) => Promise<CellReply> };

/**
 * Runs `write` in the key's turn of this worker's keyed queue, under the epoch of the ring that gives this
 * worker the key at that moment; or answers the reply that refused it (not the owner, lease lapsed,
 * queue full).
 */
export type KeyTurn = <T>(
  key: string,
  write: (epoch: number) => Promise<T>,
) => Promise<{ readonly ok: true; readonly value: T; readonly epoch: number } | { readonly ok: false; readonly reply: CellReply }>;

export type MigrationLimits = {
  /** Migrations this worker runs at once; past it cell.migrate answers cell_unavailable. */
  readonly migrationsInFlightMax: number;
  /** Attempts of the directory flip while the directory does not answer (moveEntry is idempotent). */
  readonly flipAttemptsMax: number;
  /** Pages copied before the freeze; what is left (a key appended to faster than it copies) goes in the pause. */
  readonly precopyPagesMax: number;
};

export type MigrationPorts = {
  readonly cellId: string;
  readonly store: MigrationStore & Pick<ConversationStore, "pendingOutbox" | "redriveDeadLetters">;
  readonly directory: MigrationDirectory;
  readonly router: MigrationRouter;
  readonly clock: { readonly monotonicNowMs: () => number };
  readonly turn: KeyTurn;
  readonly logger: Logger;
  readonly limits: MigrationLimits;
  /** Each cell.migrate's answer (outcome, pause); absent: not counted. */
  readonly metrics?: MigrationMetrics;
};

type Step<T> = { readonly ok: true; readonly value: T } | { readonly ok: false; readonly reply: CellReply };

/** The flip's outcome: done, refused for sure (unfreeze), or unknown (stay frozen). */
type Flip =
  | { readonly kind: "flipped"; readonly entry: DirectoryEntry }
  | { readonly kind: "refused"; readonly reply: CellReply }
  | { readonly kind: "unknown"; readonly reply: CellReply };

export class MigrationCoordinator {
  /** Ring keys being migrated by this worker: a second cell.migrate of one answers `moving`. */
  private readonly inFlight = new Set<string>();
  /** The migrations under way, for whenIdle. */
  private readonly running = new Set<Promise<CellReply>>();

  constructor(private readonly ports: MigrationPorts) {}

  /** Answers cell.migrate; never rejects. */
  async migrate(request: CellMigrateRequest): Promise<CellReply> {
    const key = ringKeyOf(request);
    if (request.toCellId === this.ports.cellId) return cellErrorReply({ kind: "invalid_field", message: "$.toCellId is this cell" });
    if (this.inFlight.has(key)) return cellErrorReply({ kind: "moving", key });
    if (this.inFlight.size >= this.ports.limits.migrationsInFlightMax) {
      return cellErrorReply({ kind: "overloaded", reason: "migrations_full" });
    }
    this.inFlight.add(key);
    const { metrics } = this.ports;
    const running =
      metrics === undefined
        ? this.runCaught(request, key)
        : this.runCaught(request, key).then((reply) => {
            metrics.migrationEnded(reply);
            return reply;
          });
    this.running.add(running);
    void running.finally(() => this.running.delete(running));
    return running;
  }

  /** Resolves once every migration under way has answered: a stopping worker waits for them. */
  async whenIdle(): Promise<void> {
    while (this.running.size > 0) await Promise.allSettled([...this.running]);
  }

  private async runCaught(request: CellMigrateRequest, key: string): Promise<CellReply> {
    try {
      return await this.run(request, key);
    } catch (error) {
      // The key is left as it is (frozen, if the freeze went through): a retried cell.migrate redoes or
      // finishes the move, and unfreezing without knowing where the failure fell could split the key.
      this.ports.logger.warn(`migration of ${key} to ${request.toCellId} failed: ${describeError(error)}`);
      return cellErrorReply({ kind: "error", error });
    } finally {
      this.inFlight.delete(key);
    }
  }

  /** Keys this worker is migrating now (tests and diagnostics). */
  get migrating(): number {
    return this.inFlight.size;
  }

  /** Whether this worker is migrating the key (its ring key) now: the frozen-key sweeper leaves it alone. */
  isMigrating(ringKey: string): boolean {
    return this.inFlight.has(ringKey);
  }

  private async run(request: CellMigrateRequest, key: string): Promise<CellReply> {
    const { cellId, directory, clock } = this.ports;
    const { kind, id, toCellId } = request;
    const entry = await directory.lookup(kind, id);
    if (entry === undefined) return notFound(key, "has no directory entry");
    if (entry.cellId !== cellId) return this.finishOrRedirect(request, key, entry);

    // The bulk of the key goes while it is still writable: mailbox events and messages never change once
    // written, so only what is appended after this copy is copied in the pause.
    const startedAtMs = clock.monotonicNowMs();
    const precopied = await this.precopy(request);
    if (!precopied.ok) return precopied.reply;

    const frozen = await this.ports.turn(key, (epoch) => this.ports.store.freeze({ kind, id, toCellId, epoch }));
    if (!frozen.ok) return frozen.reply;
    if (frozen.value.outcome !== "frozen") return this.freezeRefused(request, key, frozen.value, frozen.epoch);
    const frozenAtMs = clock.monotonicNowMs();
    const { lastSeq, floorSeq, incarnation } = frozen.value;
    if (frozen.value.placeholder) {
      if (precopied.value.targetReset) {
        // The pre-copy read a real row that is gone now: rows are never deleted while active, so this is
        // a bug or a hand-edited database; nothing moved.
        await this.unfreeze(request, key);
        return { type: "cell.error", code: "internal", message: `${key} had rows at the pre-copy and is a placeholder at the freeze` };
      }
      return this.movePlaceholder(request, key, entry, frozenAtMs);
    }
    let precopiedSeq = precopied.value.afterSeq;
    if (!precopied.value.targetReset) {
      // The conversation was created between the pre-copy (no row then) and the freeze: it is copied
      // whole now, in the pause, from its first page on (a new conversation, so a short copy).
      const first = await this.sendFirstConversationPage(request);
      if (!first.ok || !first.value) {
        await this.unfreeze(request, key);
        return first.ok ? notFound(key, "has no rows in this cell") : first.reply;
      }
      precopiedSeq = 0;
    }

    const copied = await this.copyTail(request, precopiedSeq, lastSeq);
    if (!copied.ok) {
      await this.unfreeze(request, key);
      return copied.reply;
    }
    const tailCopiedAtMs = clock.monotonicNowMs();
    // Still this worker's key, still frozen toward the target: a newer owner that began its own move of
    // the key meanwhile (after a ring change) fences this one, which then stops without unfreezing.
    const confirmed = await this.ports.turn(key, (epoch) => this.ports.store.freeze({ kind, id, toCellId, epoch }));
    if (!confirmed.ok) return confirmed.reply;
    if (confirmed.value.outcome !== "frozen") return this.freezeRefused(request, key, confirmed.value, confirmed.epoch);

    const flip = await this.flip(request, entry);
    if (flip.kind === "refused") {
      await this.unfreeze(request, key);
      return flip.reply;
    }
    if (flip.kind === "unknown") return flip.reply;

    const flippedAtMs = clock.monotonicNowMs();
    const activated = await this.activate(request, toCellId, lastSeq, floorSeq, incarnation);
    if (!activated.ok) return activated.reply;
    const activatedAtMs = clock.monotonicNowMs();
    const pauseMs = Math.max(0, Math.round(activatedAtMs - frozenAtMs));
    const tombstoned = await this.tombstone(request, key, toCellId, flip.entry.epoch);
    if (!tombstoned.ok) return tombstoned.reply;
    const round = (ms: number): number => Math.round(ms);
    this.ports.logger.info(
      `moved ${key} to cell ${toCellId} (epoch ${flip.entry.epoch}): ${precopied.value.items + copied.value} items, paused ${pauseMs} ms ` +
        `(pre-copy ${round(frozenAtMs - startedAtMs)} ms before it; tail ${round(tailCopiedAtMs - frozenAtMs)}, flip ${round(flippedAtMs - tailCopiedAtMs)}, ` +
        `activation ${round(activatedAtMs - flippedAtMs)} ms)`,
    );
    return migrated(request, cellId, toCellId, flip.entry.epoch, pauseMs, precopied.value.items + copied.value, false);
  }

  /**
   * The move of a conversation placed here but never created (a placeholder row, frozen): nothing to
   * copy, so the flip and the tombstone. No cell.import: the target creates the conversation when first
   * asked, as a new one. The target is expected to hold no row of the key (nothing was ever copied there).
   */
  private async movePlaceholder(request: CellMigrateRequest, key: string, entry: DirectoryEntry, frozenAtMs: number): Promise<CellReply> {
    const { cellId, clock } = this.ports;
    const flip = await this.flip(request, entry);
    if (flip.kind === "refused") {
      await this.unfreeze(request, key);
      return flip.reply;
    }
    if (flip.kind === "unknown") return flip.reply;
    const pauseMs = Math.max(0, Math.round(clock.monotonicNowMs() - frozenAtMs));
    const tombstoned = await this.tombstone(request, key, request.toCellId, flip.entry.epoch);
    if (!tombstoned.ok) return tombstoned.reply;
    this.ports.logger.info(
      `moved ${key} to cell ${request.toCellId} (epoch ${flip.entry.epoch}): placed here but never created, nothing copied`,
    );
    return migrated(request, cellId, request.toCellId, flip.entry.epoch, pauseMs, 0, false);
  }

  /**
   * Step 1 when the entry is not on this cell: an earlier attempt that flipped and then stopped is
   * finished (activation there, tombstone here); a move already finished answers alreadyMoved; anything
   * else answers cell.moved.
   */
  private async finishOrRedirect(request: CellMigrateRequest, key: string, entry: DirectoryEntry): Promise<CellReply> {
    const { cellId, clock, store } = this.ports;
    const state = await store.migrationState(request);
    if (state?.state === "frozen" && state.movingToCellId === entry.cellId) {
      const startedAtMs = clock.monotonicNowMs();
      // A placeholder was never copied, so there is nothing to activate: the tombstone is all that is left.
      const activated = state.placeholder
        ? { ok: true as const }
        : await this.activate(request, entry.cellId, state.lastSeq, state.floorSeq, state.incarnation);
      if (!activated.ok) return activated.reply;
      const pauseMs = Math.max(0, Math.round(clock.monotonicNowMs() - startedAtMs));
      const tombstoned = await this.tombstone(request, key, entry.cellId, entry.epoch);
      if (!tombstoned.ok) return tombstoned.reply;
      this.ports.logger.info(`finished the move of ${key} to ${entry.cellId} that an earlier attempt flipped`);
      return migrated(request, cellId, entry.cellId, entry.epoch, pauseMs, 0, false);
    }
    if (state?.state === "moved" && entry.cellId === request.toCellId) {
      // Deletes whatever rows a tombstone cut short left (idempotent), then answers the move as done.
      const tombstoned = await this.tombstone(request, key, entry.cellId, entry.epoch);
      if (!tombstoned.ok) return tombstoned.reply;
      return migrated(request, cellId, entry.cellId, entry.epoch, 0, 0, true);
    }
    if (state?.state === "frozen") {
      this.ports.logger.warn(`${key} is frozen here toward ${state.movingToCellId ?? "?"} but its directory entry is on ${entry.cellId}`);
    }
    return movedReply(request.kind, request.id, { cellId: entry.cellId, epoch: entry.epoch });
  }

  private freezeRefused(
    request: CellMigrateRequest,
    key: string,
    result: Exclude<FreezeResult, { outcome: "frozen" }>,
    epoch: number,
  ): CellReply {
    switch (result.outcome) {
      case "fenced":
        return cellErrorReply({ kind: "fenced", key, epoch });
      default:
        return migrationRefusalReply(request, key, result);
    }
  }

  /**
   * Step 3a, before the freeze: the first page (which resets the target), then the key's immutable items
   * (mailbox events or messages) as they stand, page by page, up to precopyPagesMax pages. Resolves with
   * the seq copied up to, the count of items, and whether the first page went (not for a conversation
   * with no row here, placed but never created: it may be created before the freeze, or not).
   */
  private async precopy(
    request: CellMigrateRequest,
  ): Promise<Step<{ readonly afterSeq: number; readonly items: number; readonly targetReset: boolean }>> {
    const { store } = this.ports;
    const { id, toCellId } = request;
    const fromCellId = this.ports.cellId;
    let afterSeq = 0;
    let items = 0;
    if (request.kind === "user") {
      const current = await store.migrationState(request);
      const floorSeq = current?.floorSeq ?? 0;
      const base = { type: "cell.import", kind: "user", id, fromCellId, last: false, lastSeq: floorSeq, floorSeq } as const;
      const first = await this.sendPage(toCellId, { ...base, first: true, events: [] });
      if (!first.ok) return first;
      afterSeq = floorSeq;
      for (let page = 0; page < this.ports.limits.precopyPagesMax; page++) {
        const events = await store.exportMailbox({ userId: id, afterSeq, limit: importPageItemsMax });
        const newest = events.at(-1);
        if (newest === undefined) break;
        const sent = await this.sendPage(toCellId, { ...base, first: false, events });
        if (!sent.ok) return sent;
        items += events.length;
        afterSeq = newest.seq;
      }
      return { ok: true, value: { afterSeq, items, targetReset: true } };
    }
    const first = await this.sendFirstConversationPage(request);
    if (!first.ok) return first;
    if (!first.value) return { ok: true, value: { afterSeq: 0, items: 0, targetReset: false } };
    const base = { type: "cell.import", kind: "conversation", id, fromCellId, last: false, lastSeq: 0 } as const;
    for (let page = 0; page < this.ports.limits.precopyPagesMax; page++) {
      const messages = await store.exportMessages({ conversationId: id, afterSeq, limit: importPageItemsMax });
      const newest = messages.at(-1);
      if (newest === undefined) break;
      const sent = await this.sendPage(toCellId, { ...base, first: false, conversation: null, members: [], messages, outbox: [] });
      if (!sent.ok) return sent;
      items += messages.length;
      afterSeq = newest.seq;
    }
    return { ok: true, value: { afterSeq, items, targetReset: true } };
  }

  /**
   * A conversation's first import page (its description and members; it resets the target's row).
   * Resolves false, sending nothing, when this cell has no row of it or only a placeholder.
   */
  private async sendFirstConversationPage(request: CellMigrateRequest): Promise<Step<boolean>> {
    const exported = await this.ports.store.exportConversation(request.id);
    if (exported === undefined) return { ok: true, value: false };
    const sent = await this.sendPage(request.toCellId, {
      type: "cell.import",
      kind: "conversation",
      id: request.id,
      fromCellId: this.ports.cellId,
      first: true,
      last: false,
      lastSeq: 0,
      conversation: exported.conversation,
      members: exported.members,
      messages: [],
      outbox: [],
    });
    return sent.ok ? { ok: true, value: true } : sent;
  }

  /**
   * Step 3b, in the pause: the items appended after `afterSeq` up to the frozen head, and for a
   * conversation its members with their positions (again: receipts moved during the pre-copy) and its
   * pending outbox rows. Resolves with the count of items.
   */
  private async copyTail(request: CellMigrateRequest, precopiedSeq: number, lastSeq: number): Promise<Step<number>> {
    const { store } = this.ports;
    const { id, toCellId } = request;
    const fromCellId = this.ports.cellId;
    let items = 0;
    let afterSeq = precopiedSeq;
    if (request.kind === "user") {
      const base = { type: "cell.import", kind: "user", id, fromCellId, first: false, last: false, lastSeq, floorSeq: 0 } as const;
      while (afterSeq < lastSeq) {
        const events = await store.exportMailbox({ userId: id, afterSeq, limit: importPageItemsMax });
        const newest = events.at(-1);
        if (newest === undefined) break;
        const sent = await this.sendPage(toCellId, { ...base, events });
        if (!sent.ok) return sent;
        items += events.length;
        afterSeq = newest.seq;
      }
      return { ok: true, value: items };
    }
    const exported = await store.exportConversation(id);
    if (exported === undefined) return { ok: false, reply: notFound(id, "has no rows in this cell") };
    // Dead letters go along as outbox rows (docs/decisions/0022): left here they could never be re-driven,
    // since only the conversation's owner relays its rows. Put back under their own ids, they precede their
    // recipient's newer rows in the copy below, so each recipient's order holds; the new home tries them
    // afresh and dead-letters them again if the recipient is still unreachable.
    const revived = await store.redriveDeadLetters({ conversationId: id });
    if (revived.length > 0) this.ports.logger.warn(`${id}: ${revived.length} dead letters go along to cell ${toCellId} as outbox rows`);
    const base = { type: "cell.import", kind: "conversation", id, fromCellId, first: false, last: false, lastSeq } as const;
    // Each page is a round trip in the pause: members, the messages left and the pending outbox rows share
    // pages, each part within half the page budget so that together they fit a NATS message.
    let members = exported.members;
    let outboxAfterId = 0;
    let outboxDone = false;
    for (;;) {
      const { kept: messages } =
        afterSeq < lastSeq
          ? trimToPageBudget(
              await store.exportMessages({ conversationId: id, afterSeq, limit: importPageItemsMax }),
              historyPageBytesMax / 2,
            )
          : { kept: [] };
      let outbox: ImportedOutboxEntry[] = [];
      if (!outboxDone) {
        // Pending outbox rows go along: the new home relays them (appends dedupe by event id).
        const page = await store.pendingOutbox({ olderThanMs: 0, limit: importPageItemsMax, afterId: outboxAfterId, conversationId: id });
        for (const malformed of page.malformed)
          this.ports.logger.warn(`outbox row ${malformed.id} of ${id} is not copied: ${malformed.reason}`);
        const { kept } = trimToPageBudget(page.entries, historyPageBytesMax / 2);
        outbox = kept.map((entry): ImportedOutboxEntry => ({
          recipientUserId: entry.recipientUserId,
          eventId: entry.eventId,
          event: entry.event,
        }));
        const keptLast = kept.at(-1);
        if (page.lastId === undefined) outboxDone = true;
        // A page cut by the byte budget continues after its last row sent.
        else outboxAfterId = keptLast !== undefined && kept.length < page.entries.length ? keptLast.id : page.lastId;
      }
      if (afterSeq < lastSeq && messages.length === 0) {
        return {
          ok: false,
          reply: {
            type: "cell.error",
            code: "internal",
            message: `${id} has no message after seq ${afterSeq} but its last seq is ${lastSeq}`,
          },
        };
      }
      if (members.length === 0 && messages.length === 0 && outbox.length === 0) {
        if (outboxDone) break;
        continue; // an outbox page of malformed rows only: the next one
      }
      const sent = await this.sendPage(toCellId, { ...base, conversation: null, members, messages, outbox });
      if (!sent.ok) return sent;
      members = [];
      items += messages.length;
      afterSeq = messages.at(-1)?.seq ?? afterSeq;
      if (afterSeq >= lastSeq && outboxDone) break;
    }
    return { ok: true, value: items };
  }

  /** One import page to the target's owner of the key; anything but cell.imported `importing` fails the copy. */
  private async sendPage(toCellId: string, page: CellImportRequest): Promise<Step<void>> {
    const reply = await this.request(toCellId, page);
    if (!reply.ok) return reply;
    if (reply.value.type === "cell.imported" && reply.value.state === "importing") return { ok: true, value: undefined };
    return { ok: false, reply: unexpected(page, reply.value) };
  }

  /** Step 4, with its outcome made certain where it can be: moveEntry is idempotent, so it is asked again. */
  private async flip(request: CellMigrateRequest, entry: DirectoryEntry): Promise<Flip> {
    const { directory, cellId, limits } = this.ports;
    const move = { kind: request.kind, id: request.id, fromCellId: cellId, toCellId: request.toCellId, expectedEpoch: entry.epoch };
    let lastError: unknown;
    for (let attempt = 0; attempt < limits.flipAttemptsMax; attempt++) {
      try {
        return { kind: "flipped", entry: await directory.moveEntry(move) };
      } catch (error) {
        if (!(error instanceof RemoteError)) {
          if (!(error instanceof UnavailableError)) throw error;
          lastError = error;
          continue;
        }
        // A definite refusal. Unfreezing is safe only while the entry is still on this cell.
        const reply = cellErrorReply({ kind: "error", error });
        let current: DirectoryEntry | undefined;
        try {
          current = await directory.lookup(request.kind, request.id);
        } catch {
          return { kind: "unknown", reply };
        }
        if (current?.cellId === cellId) return { kind: "refused", reply };
        if (current?.cellId === request.toCellId && current.epoch === entry.epoch + 1) return { kind: "flipped", entry: current };
        return { kind: "unknown", reply };
      }
    }
    this.ports.logger.warn(`the flip of ${request.kind} ${request.id} got no answer; it stays frozen until cell.migrate is asked again`);
    return { kind: "unknown", reply: cellErrorReply({ kind: "error", error: lastError }) };
  }

  /**
   * Step 5: the `last` page (no rows) makes the copy active in the target. A mailbox's page carries its
   * incarnation, so devices resume in the copy as in the original (docs/decisions/0021).
   */
  private async activate(
    key: MigrationKey,
    toCellId: string,
    lastSeq: number,
    floorSeq: number,
    incarnation: string | null,
  ): Promise<Step<void>> {
    const fromCellId = this.ports.cellId;
    const carried = incarnation === null ? {} : { incarnation };
    const page: CellImportRequest =
      key.kind === "user"
        ? { type: "cell.import", kind: "user", id: key.id, fromCellId, first: false, last: true, lastSeq, floorSeq, events: [], ...carried }
        : {
            type: "cell.import",
            kind: "conversation",
            id: key.id,
            fromCellId,
            first: false,
            last: true,
            lastSeq,
            conversation: null,
            members: [],
            messages: [],
            outbox: [],
          };
    const reply = await this.request(toCellId, page);
    if (!reply.ok) return reply;
    if (reply.value.type === "cell.imported" && reply.value.state === "active") return { ok: true, value: undefined };
    return { ok: false, reply: unexpected(page, reply.value) };
  }

  /** Step 6, in the key's turn. */
  private async tombstone(request: CellMigrateRequest, key: string, toCellId: string, movedEpoch: number): Promise<Step<void>> {
    const { kind, id } = request;
    const result = await this.ports.turn(key, (epoch) => this.ports.store.tombstone({ kind, id, toCellId, movedEpoch, epoch }));
    if (!result.ok) return result;
    switch (result.value.outcome) {
      case "moved":
        return { ok: true, value: undefined };
      case "not_found":
        return { ok: false, reply: notFound(key, "has no rows in this cell") };
      case "fenced":
        return { ok: false, reply: cellErrorReply({ kind: "fenced", key, epoch: result.epoch }) };
      case "moving":
        return { ok: false, reply: cellErrorReply({ kind: "moving", key }) };
    }
  }

  /** Back to active after a failed copy or a refused flip; a failure here leaves the key frozen for a retry. */
  private async unfreeze(request: CellMigrateRequest, key: string): Promise<void> {
    const { kind, id } = request;
    try {
      const result = await this.ports.turn(key, (epoch) => this.ports.store.unfreeze({ kind, id, epoch }));
      if (result.ok && result.value.outcome === "active") return;
      const why = result.ok ? result.value.outcome : result.reply.type === "cell.error" ? result.reply.message : result.reply.type;
      this.ports.logger.warn(`${key} stays frozen after a failed move (${why}); cell.migrate again to move it`);
    } catch (error) {
      this.ports.logger.warn(`${key} stays frozen after a failed move: ${describeError(error)}`);
    }
  }

  private async request(cellId: string, request: CellImportRequest): Promise<Step<CellReply>> {
    try {
      return { ok: true, value: await this.ports.router.request(cellId, request) };
    } catch (error) {
      if (!(error instanceof UnavailableError)) throw error;
      return { ok: false, reply: cellErrorReply({ kind: "error", error }) };
    }
  }
}

function migrationRefusalReply(key: MigrationKey, ringKey: string, refusal: MigrationRefusal | Fenced): CellReply {
  if (refusal.outcome === "moved") return movedReply(key.kind, key.id, refusal);
  if (refusal.outcome === "moving") return cellErrorReply({ kind: "moving", key: ringKey });
  return cellErrorReply({ kind: "not_owner", key: ringKey, ownerWorkerId: undefined });
}

function notFound(key: string, why: string): CellReply {
  return { type: "cell.error", code: "not_found", message: `${key} ${why}; nothing to move` };
}

/** A reply from the target that is not the one the step expects: its own error, or a wrong state. */
function unexpected(page: CellImportRequest, reply: CellReply): CellReply {
  if (reply.type === "cell.error" || reply.type === "cell.moved") return reply;
  const what = reply.type === "cell.imported" ? `the key is ${reply.state} there` : `it answered ${reply.type}`;
  return {
    type: "cell.error",
    code: "internal",
    message: `cell.import of ${page.kind} ${page.id} (first ${page.first}, last ${page.last}): ${what}`,
  };
}

function migrated(
  key: MigrationKey,
  fromCellId: string,
  toCellId: string,
  epoch: number,
  pauseMs: number,
  copiedItems: number,
  alreadyMoved: boolean,
): CellReply {
  return { type: "cell.migrated", kind: key.kind, id: key.id, fromCellId, toCellId, epoch, pauseMs, copiedItems, alreadyMoved };
}
