// The one routing entry (issue 12): every cell request an edge, a worker (relays, migration) or the CLI
// sends goes through a Router. `toHome` sends a request to the home cell of its key (a user's mailbox or a
// conversation, as protocol/src/request-keys.ts names it) and follows the key when it moves; `toCell` sends
// one to a cell the caller names. Both end in the ring-level step, CellRouter (the owner on the cell's ring,
// its retries, the send batcher), injected as a CellRequester so this logic is tested without NATS;
// startRouter (start-router.ts) is how a process builds one over NATS, with the CellRouter inside.
// Following moves: a cell answers `cell.moved` for a key it gave away (the requester replaces its cached
// home and asks the new one at once) and `moving` while the key is frozen or still importing (the
// requester waits a short jittered backoff and asks again). Bounded by attempts and a deadline sized so
// that a migration's pause, well under a second, is waited out; the caller's deadline bounds every step.
// Pure apart from the injected directory, cells, clock, randomness and sleep.
import { homeKeyOf, type CellMovedReply, type CellReply, type CellRequest, type HomeKey } from "@cellwire/protocol";
import { backoffDelayMs, type BackoffPolicy } from "./backoff.ts";
import { RemoteError, UnavailableError } from "./errors.ts";

// The home key of a request is derived in the protocol module (request-keys.ts), with its ring key.
export { homeKeyOf, type HomeKey };

/**
 * Where a key lives. `epoch` is the directory epoch it was learnt at; 0 when the holder does not know it
 * (a cache that keeps only cell ids), which makes any `cell.moved` newer.
 */
export type HomeLocation = { readonly cellId: string; readonly epoch: number };

/** Where homes come from: a cache in front of the directory. */
export interface HomeDirectory {
  /** The key's home, cached or asked; undefined when the directory has no entry (a conversation never placed). */
  resolve(key: HomeKey): Promise<HomeLocation | undefined>;
  /** A cell answered cell.moved: keep `location` for the key unless a newer epoch is already held. */
  moved(key: HomeKey, location: HomeLocation): void;
  /** The held home (at `epoch` or older) led nowhere useful: drop it so the next resolve asks the directory. */
  forget(key: HomeKey, epoch: number): void;
}

/**
 * The ring-level step the Router sends through (CellRouter): the owner's reply, or UnavailableError when none came.
 * `deadlineAtMs` (monotonic ms, the same clock as the router's) is when the caller stops waiting: the
 * requester MUST NOT wait past it, and carries what is left of it to the worker.
 */
export interface CellRequester {
  /** `traceparent`: the request's trace context with tracing off (docs/decisions/0037), for its headers. */
  request(cellId: string, request: CellRequest, deadlineAtMs?: number, traceparent?: string): Promise<CellReply>;
}

export type RouterOptions = {
  /** Requests sent per call, the first included (moves followed and `moving` retries both count). */
  readonly attemptsMax: number;
  /**
   * Time one call may spend retrying a key that moves (`moving`, cell.moved); above a migration's pause so
   * that it is waited out. A cap, never an extension: a caller's deadline, when given, ends the call
   * sooner, and bounds each attempt too (docs/decisions/0020).
   */
  readonly deadlineMs: number;
  /** Delay before asking again after `moving`, or after a move that named no newer home. */
  readonly movingBackoff: BackoffPolicy;
};

export type RouterDependencies = {
  readonly monotonicNowMs: () => number;
  readonly random: () => number;
  readonly sleep: (ms: number) => Promise<void>;
};

/**
 * Migration pauses are typically tens to hundreds of milliseconds; 5 s rides out a slow one, and 10 ms
 * growing to 200 ms keeps the first retries quick without hammering a frozen key. With full jitter the
 * deadline, not the attempts, is what ends a long wait.
 */
export const routerDefaults: RouterOptions = {
  attemptsMax: 64,
  deadlineMs: 5000,
  movingBackoff: { initialDelayMs: 10, maxDelayMs: 200, multiplier: 2 },
};

/** Any reply but a move: a request that ended at the key's home. */
export type HomeReply = Exclude<CellReply, CellMovedReply>;

export type HomeOutcome =
  { readonly kind: "reply"; readonly reply: HomeReply; readonly home: HomeLocation } | { readonly kind: "no_entry" };

export class Router {
  constructor(
    private readonly directory: HomeDirectory,
    private readonly cells: CellRequester,
    private readonly options: RouterOptions,
    private readonly dependencies: RouterDependencies,
  ) {
    if (!(options.attemptsMax >= 1)) throw new RangeError("Router needs attemptsMax >= 1");
  }

  /**
   * Sends `request` to the owner of its ring key in `cellId`, a cell the caller names: the kinds any worker
   * answers (cell.sharedPeers, cell.stats, dead letters), or a page for a key's new home. No move is
   * followed. Resolves with the owner's reply, errors included; throws UnavailableError when none came.
   */
  toCell(cellId: string, request: CellRequest, callerDeadlineAtMs?: number, traceparent?: string): Promise<CellReply> {
    return this.cells.request(cellId, request, callerDeadlineAtMs, traceparent);
  }

  /**
   * Sends `request` to its key's home cell, following moves. Resolves with the first reply that is not a
   * move and not `moving` (errors included), or no_entry when the key has no directory entry. Throws
   * UnavailableError cell_unavailable when the key kept moving past the attempts or the deadline, and
   * whatever the cells or the directory throw. `callerDeadlineAtMs` (monotonic ms) is when the caller
   * stops waiting: no attempt waits past it, and it is what each cell request carries; without one, the
   * router's own deadlineMs is the whole call's deadline.
   */
  async toHome(request: CellRequest, callerDeadlineAtMs?: number, traceparent?: string): Promise<HomeOutcome> {
    const key = homeKeyOf(request);
    if (key === undefined) throw new TypeError(`${request.type} has no home key`);
    const { monotonicNowMs, random, sleep } = this.dependencies;
    const ownDeadlineAtMs = monotonicNowMs() + this.options.deadlineMs;
    // The moving/moved retries stop at the sooner of the two; each attempt may use all the caller gave.
    const requestDeadlineAtMs = callerDeadlineAtMs ?? ownDeadlineAtMs;
    const deadlineAtMs = Math.min(ownDeadlineAtMs, requestDeadlineAtMs);
    // The newest home learnt during this call: a resolve that returns an older one (a cache refilled from
    // a lagging source) never sends the request back there.
    let newest: HomeLocation | undefined;
    // Set by a move: the next attempt goes straight there, without asking the directory.
    let followed: HomeLocation | undefined;
    let waits = 0;
    let problem = "";
    if (monotonicNowMs() >= requestDeadlineAtMs)
      throw new UnavailableError("deadline_exceeded", `the caller's deadline passed before ${request.type} was routed`);
    for (let attempt = 0; attempt < this.options.attemptsMax; attempt++) {
      if (attempt > 0 && monotonicNowMs() >= deadlineAtMs) break;
      let home = followed;
      followed = undefined;
      if (home === undefined) {
        const resolved = await this.directory.resolve(key);
        const candidate = newest !== undefined && (resolved === undefined || newest.epoch > resolved.epoch) ? newest : resolved;
        if (candidate === undefined) return { kind: "no_entry" };
        home = candidate;
      }
      const reply = await this.cells.request(home.cellId, request, requestDeadlineAtMs, traceparent);
      if (reply.type === "cell.moved") {
        if (reply.kind !== key.kind || reply.id !== key.id) {
          throw new RemoteError(
            "internal",
            `cell ${home.cellId} answered cell.moved for ${reply.kind} ${reply.id} to a request for ${key.kind} ${key.id}`,
          );
        }
        if (reply.epoch > home.epoch && reply.cellId !== home.cellId) {
          newest = followed = { cellId: reply.cellId, epoch: reply.epoch };
          this.directory.moved(key, followed);
          problem = `${key.kind} ${key.id} kept moving (last to cell ${reply.cellId} at epoch ${reply.epoch})`;
          continue;
        }
        // A tombstone no newer than the home asked: the reply cannot say where the key is, so the held
        // home is dropped and the directory asked again after a wait.
        this.directory.forget(key, home.epoch);
        problem = `cell ${home.cellId} answered cell.moved to cell ${reply.cellId} at epoch ${reply.epoch}, not newer than ${home.epoch}`;
      } else if (reply.type === "cell.error" && reply.code === "moving") {
        problem = `${key.kind} ${key.id} was still moving`;
      } else {
        return { kind: "reply", reply, home };
      }
      const remainingMs = deadlineAtMs - monotonicNowMs();
      if (remainingMs <= 0) break;
      await sleep(Math.min(remainingMs, backoffDelayMs(this.options.movingBackoff, waits++, random)));
    }
    throw new UnavailableError(
      "cell_unavailable",
      `${problem} (gave up within ${this.options.attemptsMax} attempts and ${this.options.deadlineMs} ms)`,
    );
  }
}
