// The users whose presence this client watches and what it knows of each. Pure: it decides which
// `presence` frames and snapshot entries become "presence" events. A frame about a user no longer
// watched (sent before a newer watchPresence reached the edge) is dropped, and so is one that repeats
// the status already known (a snapshot may have carried the change first).
import type { PresenceState } from "@cellwire/protocol";

export class PresenceWatch {
  private watched: readonly string[] = [];
  private readonly watchedSet = new Set<string>();
  private readonly known = new Map<string, PresenceState>();

  get userIds(): readonly string[] {
    return this.watched;
  }

  /** The last state known of a watched user. */
  stateOf(userId: string): PresenceState | undefined {
    return this.known.get(userId);
  }

  /** Replaces the watched set; what was known of users no longer watched is forgotten. */
  replace(userIds: readonly string[]): void {
    this.watched = [...userIds];
    this.watchedSet.clear();
    for (const userId of userIds) this.watchedSet.add(userId);
    for (const userId of [...this.known.keys()]) if (!this.watchedSet.has(userId)) this.known.delete(userId);
  }

  /** A `presence` frame: the state to emit, or undefined when it is not news. */
  changed(state: PresenceState): PresenceState | undefined {
    if (!this.watchedSet.has(state.userId)) return undefined;
    const before = this.known.get(state.userId);
    this.known.set(state.userId, state);
    return before?.status === state.status ? undefined : state;
  }

  /**
   * A `presenceSnapshot`: stores each watched user's state and returns those of users already known
   * whose status differs (a change missed while disconnected). Users seen for the first time are not
   * news: the caller of watchPresence receives the snapshot itself.
   */
  snapshot(users: readonly PresenceState[]): PresenceState[] {
    const news: PresenceState[] = [];
    for (const state of users) {
      if (!this.watchedSet.has(state.userId)) continue;
      const before = this.known.get(state.userId);
      this.known.set(state.userId, state);
      if (before !== undefined && before.status !== state.status) news.push(state);
    }
    return news;
  }
}
