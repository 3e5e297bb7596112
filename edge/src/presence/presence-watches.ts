// Which sessions watch which users' presence, both ways: a presence change finds its watchers without a
// scan, and a closing session lets go of its users. A watcher's set is replaced whole by each
// watchPresence (at most presenceWatchUsersMax users, checked by the frame decoder), so the index holds
// at most sessions × presenceWatchUsersMax entries.

export class PresenceWatches<Watcher> {
  private readonly watchersByUser = new Map<string, Set<Watcher>>();
  private readonly usersByWatcher = new Map<Watcher, readonly string[]>();

  /** Users watched by at least one watcher. */
  get watchedUserCount(): number {
    return this.watchersByUser.size;
  }

  /** Replaces what `watcher` watches; an empty list stops it watching. */
  replace(watcher: Watcher, userIds: readonly string[]): void {
    this.remove(watcher);
    if (userIds.length === 0) return;
    const unique = [...new Set(userIds)];
    this.usersByWatcher.set(watcher, unique);
    for (const userId of unique) {
      let watchers = this.watchersByUser.get(userId);
      if (watchers === undefined) {
        watchers = new Set();
        this.watchersByUser.set(userId, watchers);
      }
      watchers.add(watcher);
    }
  }

  remove(watcher: Watcher): void {
    const userIds = this.usersByWatcher.get(watcher);
    if (userIds === undefined) return;
    this.usersByWatcher.delete(watcher);
    for (const userId of userIds) {
      const watchers = this.watchersByUser.get(userId);
      watchers?.delete(watcher);
      if (watchers?.size === 0) this.watchersByUser.delete(userId);
    }
  }

  /** A copy: a watcher may stop watching while the caller iterates. */
  watchersOf(userId: string): Watcher[] {
    return [...(this.watchersByUser.get(userId) ?? [])];
  }

  watchedBy(watcher: Watcher): readonly string[] {
    return this.usersByWatcher.get(watcher) ?? [];
  }
}
