// The one HomeDirectory of the services (docs/decisions/0031): homes read through a DirectoryCache, asked of
// the directory on a miss. The edge routes client requests with it, a worker's relay its mailbox appends;
// what differs between them is the cache's options and the lookup, given by each at its call site.
import type { HomeKey } from "@cellwire/protocol";
import { directoryCacheKey, type DirectoryCache } from "./directory-cache.ts";
import type { HomeDirectory, HomeLocation } from "./router.ts";

/**
 * Asks the directory where `key` lives: undefined when it has no entry. A lookup may place the key (a user
 * seen for the first time); it is called at most once at a time per key (the cache shares it).
 */
export type HomeLookup = (key: HomeKey) => Promise<HomeLocation | undefined>;

export class CachedHomes implements HomeDirectory {
  constructor(
    private readonly lookup: HomeLookup,
    private readonly cache: DirectoryCache,
  ) {}

  /** The held home, else the directory's; a directory.changed that arrived during the lookup wins. */
  resolve(key: HomeKey): Promise<HomeLocation | undefined> {
    return this.cache.get(directoryCacheKey(key.kind, key.id), async () => {
      const location = await this.lookup(key);
      return location === undefined ? undefined : { kind: key.kind, id: key.id, cellId: location.cellId, epoch: location.epoch };
    });
  }

  moved(key: HomeKey, location: HomeLocation): void {
    this.cache.remember(directoryCacheKey(key.kind, key.id), {
      kind: key.kind,
      id: key.id,
      cellId: location.cellId,
      epoch: location.epoch,
    });
  }

  forget(key: HomeKey, epoch: number): void {
    this.cache.forgetUpTo(directoryCacheKey(key.kind, key.id), epoch);
  }
}
