// Resumes moves whose mover died. A key stays frozen in this cell when the worker moving it out stopped
// between the freeze and the tombstone (killed, or its pool lost): writes for it answer `moving` until
// someone asks cell.migrate again. Each worker's sweeper lists the cell's frozen keys every interval and,
// for a key it owns on its ring, is not moving itself, and has seen frozen toward the same target for at
// least one interval, runs the coordinator's migrate toward that target: it finishes a flipped move
// (activation there, tombstone here) and redoes an unflipped one (the first page resets the target's copy,
// the freeze accepts the key already frozen toward it).
//
// Each sweep lists at most keysMax keys, starting after the last key the previous sweep listed and
// wrapping to the first once a listing reaches the end: keys that cannot resume (their target refuses)
// would otherwise fill every listing and starve the keys after them. A key is watched from the sweep that
// first lists it until a sweep whose listing covers its place no longer holds it.
//
// A live mover elsewhere (the key's previous owner, before a ring change) may still be at work: the
// resumed move's freeze raises the key's epoch, which fences the older mover's later writes here.
import { ringKeyOf, type CellMigrateRequest, type CellReply } from "@cellwire/protocol";
import type { Logger } from "@cellwire/cluster";
import { describeError } from "./store/errors.ts";
import { compareMigrationKeys } from "./store/key-state.ts";
import type { FrozenKey, MigrationKey, MigrationStore } from "./store/store.ts";

/** A frozen key with the cell it is frozen toward: what a resumed move needs. */
export type ResumableKey = MigrationKey & { readonly toCellId: string };

export type FrozenKeySweeperLimits = {
  /** The period of the sweep (timed from the end of the previous one), and how long a key must be seen frozen unattended before it is resumed. */
  readonly sweepIntervalMs: number;
  /** Frozen keys one sweep lists (the cell's, whoever owns them); the next sweep lists the ones after them. */
  readonly keysMax: number;
  /** Moves one sweep resumes, at once; the rest wait for the next sweep. */
  readonly resumesMax: number;
};

export type FrozenKeySweeperPorts = {
  readonly store: Pick<MigrationStore, "frozenKeys">;
  /** True when this worker owns the ring key now (lease held, ring names it). */
  readonly owns: (ringKey: string) => boolean;
  /** True while this worker's coordinator is moving the ring key. */
  readonly migrating: (ringKey: string) => boolean;
  /** The coordinator's migrate; never rejects. */
  readonly migrate: (request: CellMigrateRequest) => Promise<CellReply>;
  readonly clock: { readonly monotonicNowMs: () => number };
  readonly logger: Logger;
  readonly limits: FrozenKeySweeperLimits;
};

/** A key on the watch list, since when it has been seen frozen toward its target, unattended. */
export type WatchedKey = { readonly key: MigrationKey; readonly sinceMs: number };

/**
 * How many listings' worth of watched keys outside the current listing a sweeper keeps (keysMax times
 * this): the watch list's bound when more keys are frozen than one listing holds. A key dropped for it is
 * watched again, from scratch, when the cursor next lists it.
 */
export const watchedListingsMax = 16;

export type FrozenKeySelectionInput = {
  /** The keys this sweep listed: those after `listedAfter`, up to `listedThrough`, in frozenKeys order. */
  readonly frozen: readonly FrozenKey[];
  /** The cursor of this listing (absent: it started at the first key). */
  readonly listedAfter?: MigrationKey;
  /** The last key listed when the listing was cut at its limit (absent: it reached the last key). */
  readonly listedThrough?: MigrationKey;
  /** The previous sweep's watch list (see FrozenKeySelection.firstSeenAtMs). */
  readonly firstSeenAtMs: ReadonlyMap<string, WatchedKey>;
  /** The bound of the watch list; the keys of this listing are always watched. */
  readonly watchedKeysMax: number;
  readonly nowMs: number;
  /** A key is resumed once seen frozen, unattended, for at least this long. */
  readonly frozenForMsMin: number;
  readonly owns: (ringKey: string) => boolean;
  readonly migrating: (ringKey: string) => boolean;
  readonly resumesMax: number;
};

export type FrozenKeySelection = {
  /** At most resumesMax keys, in the order listed. */
  readonly resume: readonly ResumableKey[];
  /**
   * The watch list for the next sweep: each key of this sweep that this worker owns and is not moving,
   * with its target, since when it has been seen so in every sweep that listed its place. A key missing
   * from a listing that covers its place (unfrozen, moved, owned elsewhere, being moved here) starts
   * again; keys outside this listing are kept as they were, up to watchedKeysMax.
   */
  readonly firstSeenAtMs: ReadonlyMap<string, WatchedKey>;
  /** Frozen keys that name no target (a bug or a hand-edited database): they cannot be resumed. */
  readonly withoutTarget: readonly FrozenKey[];
};

/** Which frozen keys to resume now. Pure. */
export function selectFrozenKeysToResume(input: FrozenKeySelectionInput): FrozenKeySelection {
  const resume: ResumableKey[] = [];
  const withoutTarget: FrozenKey[] = [];
  const firstSeenAtMs = new Map<string, WatchedKey>();
  for (const key of input.frozen) {
    if (key.movingToCellId === null) {
      withoutTarget.push(key);
      continue;
    }
    const ringKey = ringKeyOf(key);
    if (!input.owns(ringKey) || input.migrating(ringKey)) continue;
    // The target is part of the watched identity: a key frozen again toward another cell is a new move.
    const watched = `${ringKey}\n${key.movingToCellId}`;
    const sinceMs = input.firstSeenAtMs.get(watched)?.sinceMs ?? input.nowMs;
    firstSeenAtMs.set(watched, { key: { kind: key.kind, id: key.id }, sinceMs });
    if (input.nowMs - sinceMs >= input.frozenForMsMin && resume.length < input.resumesMax) {
      resume.push({ kind: key.kind, id: key.id, toCellId: key.movingToCellId });
    }
  }
  const { listedAfter, listedThrough } = input;
  const outsideListing = (key: MigrationKey): boolean =>
    (listedAfter !== undefined && compareMigrationKeys(key, listedAfter) <= 0) ||
    (listedThrough !== undefined && compareMigrationKeys(key, listedThrough) > 0);
  for (const [watched, entry] of input.firstSeenAtMs) {
    if (firstSeenAtMs.size >= input.watchedKeysMax) break;
    if (!firstSeenAtMs.has(watched) && outsideListing(entry.key)) firstSeenAtMs.set(watched, entry);
  }
  return { resume, firstSeenAtMs, withoutTarget };
}

export type ResumedMove = { readonly key: ResumableKey; readonly reply: CellReply };

export class FrozenKeySweeper {
  private firstSeenAtMs: ReadonlyMap<string, WatchedKey> = new Map();
  /** Where the next listing starts: after the last key of a listing cut at keysMax, else at the first key. */
  private cursor: MigrationKey | undefined;
  private timer: ReturnType<typeof setTimeout> | undefined;
  private sweeping: Promise<unknown> | undefined;
  private stopped = false;

  constructor(private readonly ports: FrozenKeySweeperPorts) {}

  /** Sweeps every sweepIntervalMs, the next timed from the end of the previous. */
  start(): void {
    if (this.stopped || this.timer !== undefined) return;
    this.timer = setTimeout(() => {
      this.sweeping = this.sweep()
        .catch((error: unknown) => this.ports.logger.warn(`frozen-key sweep failed: ${describeError(error)}`))
        .finally(() => {
          this.sweeping = undefined;
          this.timer = undefined;
          this.start();
        });
    }, this.ports.limits.sweepIntervalMs);
  }

  /** Stops sweeping; resolves once the sweep under way (and the moves it resumed) has finished. */
  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer !== undefined) clearTimeout(this.timer);
    this.timer = undefined;
    await this.sweeping;
  }

  /** One sweep: lists the frozen keys, resumes those selected (at once), resolves with their replies. */
  async sweep(): Promise<readonly ResumedMove[]> {
    const { store, clock, logger, limits } = this.ports;
    const listedAfter = this.cursor;
    const frozen = await store.frozenKeys(limits.keysMax, listedAfter);
    const last = frozen.at(-1);
    const listedThrough = frozen.length >= limits.keysMax && last !== undefined ? { kind: last.kind, id: last.id } : undefined;
    this.cursor = listedThrough;
    const selection = selectFrozenKeysToResume({
      frozen,
      ...(listedAfter === undefined ? {} : { listedAfter }),
      ...(listedThrough === undefined ? {} : { listedThrough }),
      firstSeenAtMs: this.firstSeenAtMs,
      watchedKeysMax: limits.keysMax * watchedListingsMax,
      nowMs: clock.monotonicNowMs(),
      frozenForMsMin: limits.sweepIntervalMs,
      owns: this.ports.owns,
      migrating: this.ports.migrating,
      resumesMax: limits.resumesMax,
    });
    this.firstSeenAtMs = selection.firstSeenAtMs;
    for (const key of selection.withoutTarget) logger.warn(`${key.kind} ${key.id} is frozen toward no cell; it cannot be resumed`);
    if (listedThrough !== undefined) {
      logger.warn(`the sweep listed WORKER_FROZEN_SWEEP_KEYS_MAX=${limits.keysMax} frozen keys; the next sweep lists the keys after them`);
    }
    return Promise.all(selection.resume.map((key) => this.resume(key)));
  }

  private async resume(key: ResumableKey): Promise<ResumedMove> {
    const { logger } = this.ports;
    const { toCellId } = key;
    logger.info(`resuming the move of ${key.kind} ${key.id} to cell ${toCellId}: frozen here with no mover for a sweep interval`);
    const reply = await this.ports.migrate({ type: "cell.migrate", kind: key.kind, id: key.id, toCellId });
    if (reply.type === "cell.migrated")
      logger.info(`resumed move of ${key.kind} ${key.id} to cell ${reply.toCellId} done (epoch ${reply.epoch})`);
    else
      logger.warn(`resumed move of ${key.kind} ${key.id} to cell ${toCellId} answered ${describeReply(reply)}; the next sweep tries again`);
    return { key, reply };
  }
}

function describeReply(reply: CellReply): string {
  if (reply.type === "cell.error") return `${reply.code}: ${reply.message}`;
  if (reply.type === "cell.moved") return `cell.moved to ${reply.cellId}`;
  return reply.type;
}
