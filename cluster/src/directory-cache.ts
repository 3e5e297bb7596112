// The one cache of directory entries in front of the directory: the edge's (users and conversations, so
// that no frame costs a directory round trip once they are known) and the worker's relay's (recipients'
// home cells), both read through CachedHomes (cached-homes.ts). Bounded (least recently used entries go
// first) and aged (an entry ttlMs old is fetched again; BoundedCache), with the clock injected. Concurrent
// misses for one key share one request; an entry is never replaced by an older epoch.
import type { DirectoryEntry, DirectoryEntryKind } from "@cellwire/protocol";
import { BoundedCache } from "./bounded-cache.ts";
import { ConcurrencyLimiter } from "./concurrency-limiter.ts";

/**
 * The cache key of a user's or a conversation's entry: a user's is its id itself, which the edge's session
 * already holds, so a cached user costs no second string (a user id has no ':' (userIdPattern), so no
 * conversation's key can collide with it); a conversation's is prefixed.
 */
export function directoryCacheKey(kind: DirectoryEntryKind, id: string): string {
  return kind === "user" ? id : `${kind}:${id}`;
}

export type EntryFetcher = (key: string) => Promise<DirectoryEntry | undefined>;

/**
 * Directory requests one edge has in flight at most; further misses wait their turn. The directory answers
 * at most DIRECTORY_REQUESTS_IN_FLIGHT_MAX (256) requests at once and refuses the rest directory_unavailable,
 * which closes a connecting session: when the clients of a dead edge arrive here by thousands, none of
 * them should be refused for asking all at once.
 */
export const directoryFetchesInFlightMax = 128;

export type DirectoryCacheOptions = {
  readonly entriesMax: number;
  /** How long an entry is served from when it was stored (BoundedCache's rule, docs/decisions/0029). */
  readonly ttlMs: number;
  /** A monotonic clock. */
  readonly nowMs: () => number;
  /** Lookups in flight at most; further misses wait their turn. */
  readonly fetchesInFlightMax: number;
  /**
   * What a directory.changed does for a key neither held nor being looked up: "ignore" it (a drain of
   * thousands of keys elsewhere then evicts nothing) or "keep" it as a new entry. A change for a key being
   * looked up is kept either way, since the lookup may have been answered before the move. The reason each
   * service picks its value is at its call site (docs/decisions/0031).
   */
  readonly changesOfUncachedKeys: "ignore" | "keep";
  /**
   * Told of each lookup, for the metrics: a hit is an entry held and fresh; a miss asks the directory or
   * joins a request in flight.
   */
  readonly onLookup?: (result: DirectoryCacheLookup) => void;
};

export type DirectoryCacheLookup = "hit" | "miss";

/** Caches directory entries; an entry with an older epoch than the cached one never replaces it. */
export class DirectoryCache {
  private readonly cache: BoundedCache<DirectoryEntry>;
  private readonly inFlight = new Map<string, Promise<DirectoryEntry | undefined>>();
  private readonly fetches: ConcurrencyLimiter;
  private readonly keepsChangesOfUncachedKeys: boolean;
  private readonly onLookup: ((result: DirectoryCacheLookup) => void) | undefined;

  constructor(options: DirectoryCacheOptions) {
    this.cache = new BoundedCache(options.entriesMax, options.ttlMs, options.nowMs);
    this.fetches = new ConcurrencyLimiter(options.fetchesInFlightMax);
    this.keepsChangesOfUncachedKeys = options.changesOfUncachedKeys === "keep";
    this.onLookup = options.onLookup;
  }

  get size(): number {
    return this.cache.size;
  }

  async get(key: string, fetch: EntryFetcher): Promise<DirectoryEntry | undefined> {
    const cached = this.cache.get(key);
    this.onLookup?.(cached === undefined ? "miss" : "hit");
    if (cached !== undefined) return cached;
    const pending = this.inFlight.get(key);
    if (pending !== undefined) return pending;
    const request = this.fetches
      .run(() => fetch(key))
      .then(
        (entry) => {
          this.inFlight.delete(key);
          if (entry === undefined) return undefined;
          this.remember(key, entry);
          // A change published while the lookup was on its way was kept (changed): it wins over what the
          // lookup found, so the caller is not sent to the old home to be told it moved.
          return this.cache.get(key) ?? entry;
        },
        (error: unknown) => {
          this.inFlight.delete(key);
          throw error;
        },
      );
    this.inFlight.set(key, request);
    return request;
  }

  /** The cached entry, if any, without asking the directory. */
  peek(key: string): DirectoryEntry | undefined {
    return this.cache.get(key);
  }

  remember(key: string, entry: DirectoryEntry): void {
    const cached = this.cache.get(key);
    if (cached !== undefined && cached.epoch > entry.epoch) return;
    // A user's entry keeps the key's string as its id rather than the one decoded from the directory's
    // reply: one string per cached user, not two (about 40 bytes per session at the edge).
    this.cache.set(key, entry.kind === "user" && entry.id === key ? { ...entry, id: key } : entry);
  }

  forget(key: string): void {
    this.cache.delete(key);
  }

  /**
   * The directory published a move: a held (or being fetched) entry older than `entry` is replaced by
   * it. A key neither held nor being fetched is added only with changesOfUncachedKeys "keep".
   */
  changed(entry: DirectoryEntry): void {
    const key = directoryCacheKey(entry.kind, entry.id);
    if (!this.keepsChangesOfUncachedKeys && this.cache.get(key) === undefined && !this.inFlight.has(key)) return;
    this.remember(key, entry);
  }

  /** Drops the entry unless it is newer than `epoch`: a move answered by a cell showed it stale. */
  forgetUpTo(key: string, epoch: number): void {
    const cached = this.cache.get(key);
    if (cached !== undefined && cached.epoch <= epoch) this.cache.delete(key);
  }
}
