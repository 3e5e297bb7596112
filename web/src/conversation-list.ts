// The page's list of the conversations the user joined while it is open (from the SDK's "joined"
// events), without the DOM: newest first, each once, bounded, so main.ts only mirrors these decisions
// into <li> elements. The page starts live, so it hears only of conversations joined from then on.
import type { Joined } from "@cellwire/client";

/** The page lists at most this many conversations; older ones drop off the bottom. */
export const displayedConversationsMax = 20;

export class ConversationList {
  /** Newest first. */
  private readonly conversationIds: string[] = [];

  constructor(private readonly capacity = displayedConversationsMax) {}

  get size(): number {
    return this.conversationIds.length;
  }

  has(conversationId: string): boolean {
    return this.conversationIds.includes(conversationId);
  }

  /**
   * Adds a conversation at the top; null when it is already listed (a joined event is emitted once, but a
   * page may be told twice). `evictedCount`: entries to remove from the bottom afterwards.
   */
  add(conversationId: string): { readonly evictedCount: number } | null {
    if (this.has(conversationId)) return null;
    this.conversationIds.unshift(conversationId);
    const evictedCount = Math.max(0, this.conversationIds.length - this.capacity);
    this.conversationIds.splice(this.capacity, evictedCount);
    return { evictedCount };
  }

  clear(): void {
    this.conversationIds.length = 0;
  }
}

/** The text of one list item, as the user `userId` reads it. */
export function formatConversationLine(joined: Pick<Joined, "conversationKind" | "title" | "addedByUserId">, userId: string): string {
  const by = joined.addedByUserId === userId ? "you" : joined.addedByUserId;
  if (joined.conversationKind === "direct") return `direct conversation, opened by ${by}`;
  return `group "${joined.title ?? "untitled"}", added by ${by}`;
}
