// The edge's settings of the one directory cache (@cellwire/cluster's DirectoryCache, docs/decisions/0031),
// and its lookups counted by result for cellwire_edge_directory_cache_lookups_total.
import { DirectoryCache, directoryFetchesInFlightMax, type EntryFetcher } from "@cellwire/cluster";
import type { DirectoryEntry } from "@cellwire/protocol";
import type { DirectoryCacheLookup } from "./edge-metrics.ts";

/** Told of each lookup: a hit is an entry held and fresh; a miss asks the directory or joins a request in flight. */
export type DirectoryCacheLookups = (result: DirectoryCacheLookup) => void;

/** A DirectoryCache that reports each lookup's result; the cache itself is unchanged. */
class CountedDirectoryCache extends DirectoryCache {
  constructor(
    options: ConstructorParameters<typeof DirectoryCache>[0],
    private readonly lookups: DirectoryCacheLookups,
  ) {
    super(options);
  }

  override get(key: string, fetch: EntryFetcher): Promise<DirectoryEntry | undefined> {
    // One more lookup in the cache's Map (about 50 ns) per request, to tell a hit from a miss.
    this.lookups(this.peek(key) === undefined ? "miss" : "hit");
    return super.get(key, fetch);
  }
}

/** The edge's cache of users' and conversations' entries (EDGE_DIRECTORY_CACHE_ENTRIES_MAX, _TTL_MS). */
export function createEdgeDirectoryCache(
  entriesMax: number,
  ttlMs: number,
  nowMs: () => number,
  lookups: DirectoryCacheLookups = () => {},
): DirectoryCache {
  return new CountedDirectoryCache(
    {
      entriesMax,
      ttlMs,
      nowMs,
      // When the clients of a dead edge arrive here by thousands, their lookups must not all hit the directory at once.
      fetchesInFlightMax: directoryFetchesInFlightMax,
      // An edge caches only the users and conversations of its own sessions: a drain moving thousands of keys
      // elsewhere would otherwise evict them, and a key it has not asked for it may never need.
      changesOfUncachedKeys: "ignore",
    },
    lookups,
  );
}
