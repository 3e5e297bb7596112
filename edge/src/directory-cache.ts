// The edge's settings of the one directory cache (@cellwire/cluster's DirectoryCache, docs/decisions/0031),
// its lookups counted by result for cellwire_edge_directory_cache_lookups_total.
import { DirectoryCache, directoryFetchesInFlightMax, type DirectoryCacheLookup } from "@cellwire/cluster";

/** The edge's cache of users' and conversations' entries (EDGE_DIRECTORY_CACHE_ENTRIES_MAX, _TTL_MS). */
export function createEdgeDirectoryCache(
  entriesMax: number,
  ttlMs: number,
  nowMs: () => number,
  onLookup: (result: DirectoryCacheLookup) => void = () => {},
): DirectoryCache {
  return new DirectoryCache({
    entriesMax,
    ttlMs,
    nowMs,
    // When the clients of a dead edge arrive here by thousands, their lookups must not all hit the directory at once.
    fetchesInFlightMax: directoryFetchesInFlightMax,
    // An edge caches only the users and conversations of its own sessions: a drain moving thousands of keys
    // elsewhere would otherwise evict them, and a key it has not asked for it may never need.
    changesOfUncachedKeys: "ignore",
    onLookup,
  });
}
