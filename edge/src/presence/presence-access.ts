// Whose presence a user may watch (EDGE_PRESENCE_POLICY). Under `shared_conversation` (the default) a
// watcher sees a user only when both are members of at least one conversation; under `everyone`, anyone.
//
// The edge learns it when a session watches, never per heartbeat or per presence change: it asks every
// registered cell once for all the users of the watch it does not know (`cell.sharedPeers`: conversations
// live in their home cells, so no single cell knows them all) and keeps each (watcher, user) answer for
// ttlMs, at most pairsMax of them. A user the watcher may not see is answered exactly like a user who
// never came online (offline, changedAtMs null) and never gets a presence frame: a forbidden watch cannot
// be told from a watch of an unknown user. Members are never removed from a conversation, so a "may see"
// stays true; a "may not" is asked again after ttlMs (a conversation made since then lets it through).
import type { CellReply, CellRequest } from "@cellwire/protocol";
import { BoundedCache } from "@cellwire/cluster";

export const presencePolicies = ["shared_conversation", "everyone"] as const;
export type PresencePolicy = (typeof presencePolicies)[number];

export interface PresenceAccess {
  /** Which of `userIds` the watcher may see (the watcher always sees themself). */
  visible(watcherUserId: string, userIds: readonly string[]): Promise<ReadonlySet<string>>;
}

/** EDGE_PRESENCE_POLICY=everyone: anyone may watch anyone (a deployment where presence is public). */
export class EveryoneVisible implements PresenceAccess {
  async visible(_watcherUserId: string, userIds: readonly string[]): Promise<ReadonlySet<string>> {
    return new Set(userIds);
  }
}

export type SharedConversationAccessOptions = {
  /** (watcher, user) answers kept at most; past it the least recently used is forgotten. */
  readonly pairsMax: number;
  /** How long an answer (and the list of cells) is trusted. */
  readonly ttlMs: number;
};

export type SharedConversationAccessDependencies = {
  /** Every registered cell, draining ones included: they still home conversations. */
  readonly listCellIds: () => Promise<readonly string[]>;
  /** One request to a cell (any of its workers answers cell.sharedPeers). */
  readonly requestCell: (cellId: string, request: CellRequest) => Promise<CellReply>;
  /** Monotonic milliseconds. */
  readonly nowMs: () => number;
  readonly warn: (message: string) => void;
};

/**
 * Fails closed: a user no cell vouched for is not visible. When a cell did not answer, its "no" is not
 * remembered (only the "yes" of the others), so the next watch asks again.
 */
export class SharedConversationAccess implements PresenceAccess {
  /** Keyed by pairKey(watcher, user). */
  private readonly answers: BoundedCache<boolean>;
  private cells: { readonly cellIds: readonly string[]; readonly atMs: number } | undefined;

  constructor(
    private readonly options: SharedConversationAccessOptions,
    private readonly dependencies: SharedConversationAccessDependencies,
  ) {
    if (!(options.pairsMax >= 1) || !(options.ttlMs >= 0))
      throw new RangeError("SharedConversationAccess needs pairsMax >= 1 and ttlMs >= 0");
    this.answers = new BoundedCache(options.pairsMax, options.ttlMs, dependencies.nowMs);
  }

  get rememberedPairCount(): number {
    return this.answers.size;
  }

  async visible(watcherUserId: string, userIds: readonly string[]): Promise<ReadonlySet<string>> {
    const visible = new Set<string>();
    const unknown: string[] = [];
    for (const userId of new Set(userIds)) {
      if (userId === watcherUserId) visible.add(userId);
      else {
        const shared = this.answers.get(pairKey(watcherUserId, userId));
        if (shared === true) visible.add(userId);
        else if (shared === undefined) unknown.push(userId);
      }
    }
    if (unknown.length === 0) return visible;
    const { shared, complete } = await this.ask(watcherUserId, unknown);
    for (const userId of unknown) {
      if (shared.has(userId)) {
        visible.add(userId);
        this.answers.set(pairKey(watcherUserId, userId), true);
      } else if (complete) this.answers.set(pairKey(watcherUserId, userId), false);
    }
    return visible;
  }

  /** Every cell, in parallel: the users any of them says share a conversation, and whether all answered. */
  private async ask(watcherUserId: string, peerUserIds: readonly string[]): Promise<{ shared: ReadonlySet<string>; complete: boolean }> {
    const shared = new Set<string>();
    let cellIds: readonly string[];
    try {
      cellIds = await this.cellIds();
    } catch (error) {
      this.dependencies.warn(`presence access: the cells could not be listed: ${String(error)}`);
      return { shared, complete: false };
    }
    const request: CellRequest = { type: "cell.sharedPeers", userId: watcherUserId, peerUserIds: [...peerUserIds] };
    const asked = new Set(peerUserIds);
    const answers = await Promise.allSettled(cellIds.map((cellId) => this.dependencies.requestCell(cellId, request)));
    let complete = true;
    answers.forEach((answer, index) => {
      const cellId = cellIds[index] ?? "?";
      if (answer.status === "rejected") {
        complete = false;
        this.dependencies.warn(`presence access: cell ${cellId} did not answer cell.sharedPeers: ${String(answer.reason)}`);
        return;
      }
      const reply = answer.value;
      if (reply.type !== "cell.sharedPeers" || reply.userId !== watcherUserId) {
        complete = false;
        this.dependencies.warn(
          `presence access: cell ${cellId} answered ${reply.type === "cell.error" ? `${reply.type} ${reply.code}` : reply.type} to cell.sharedPeers`,
        );
        return;
      }
      // Only users that were asked about: a confused cell cannot widen the watch.
      for (const userId of reply.peerUserIds) if (asked.has(userId)) shared.add(userId);
    });
    return { shared, complete };
  }

  private async cellIds(): Promise<readonly string[]> {
    const nowMs = this.dependencies.nowMs();
    if (this.cells !== undefined && nowMs - this.cells.atMs < this.options.ttlMs) return this.cells.cellIds;
    const cellIds = await this.dependencies.listCellIds();
    this.cells = { cellIds, atMs: nowMs };
    return cellIds;
  }
}

/** User ids never hold a newline (the allowlist), so the pair key is unambiguous. */
function pairKey(watcherUserId: string, userId: string): string {
  return `${watcherUserId}\n${userId}`;
}
