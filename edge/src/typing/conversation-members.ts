// Who may type in a conversation, and to whom the indicator goes: the conversation's member list, cached
// at the edge. A list is learnt from any conversation reply passing through this edge (openDirect,
// createGroup, addMembers) or, on a miss, from a read-only `cell.members` at the conversation's owner;
// it is trusted for ttlMs, so a membership change made through another edge reaches typing within that.
// Nothing here writes to a cell. Concurrent misses for one conversation and user share one request.
import { BoundedCache, expectCellReply, RemoteError, type HomeOutcome } from "@cellwire/cluster";
import type { CellRequest, ConversationSummary } from "@cellwire/protocol";

export type MembersLookup = { readonly kind: "members"; readonly memberUserIds: readonly string[] } | { readonly kind: "not_a_member" };

type MemberList = { readonly memberUserIds: readonly string[]; readonly members: ReadonlySet<string> };

export type ConversationMembersOptions = {
  readonly conversationsMax: number;
  readonly ttlMs: number;
};

export type ConversationMembersDependencies = {
  /** Sends a request to the conversation's home cell, following moves (RequestHandler.requestAtHome). */
  readonly requestAtHome: (request: CellRequest) => Promise<HomeOutcome>;
  /** Monotonic milliseconds. */
  readonly nowMs: () => number;
};

const notAMember: MembersLookup = { kind: "not_a_member" };

export class ConversationMembers {
  private readonly cache: BoundedCache<MemberList>;
  private readonly loading = new Map<string, Promise<MembersLookup>>();

  constructor(
    options: ConversationMembersOptions,
    private readonly dependencies: ConversationMembersDependencies,
  ) {
    this.cache = new BoundedCache(options.conversationsMax, options.ttlMs, dependencies.nowMs);
  }

  get cachedConversationCount(): number {
    return this.cache.size;
  }

  /** A fresh member list, from a conversation reply the edge relayed. */
  remember(conversation: ConversationSummary): void {
    this.cache.set(conversation.conversationId, memberList(conversation.memberUserIds));
  }

  /** The members, when `userId` is one of them; not_a_member otherwise (or when the conversation is unknown). */
  async lookup(conversationId: string, userId: string): Promise<MembersLookup> {
    const cached = this.cache.get(conversationId);
    if (cached !== undefined) return cached.members.has(userId) ? { kind: "members", memberUserIds: cached.memberUserIds } : notAMember;
    const key = `${conversationId}/${userId}`;
    const pending = this.loading.get(key);
    if (pending !== undefined) return pending;
    const loaded = this.load(conversationId, userId).finally(() => this.loading.delete(key));
    this.loading.set(key, loaded);
    return loaded;
  }

  private async load(conversationId: string, userId: string): Promise<MembersLookup> {
    const request = { type: "cell.members", conversationId, userId } as const;
    const outcome = await this.dependencies.requestAtHome(request);
    if (outcome.kind === "no_entry") return notAMember;
    const { reply } = outcome;
    // A non-member learns nothing, not even whether the conversation exists.
    if (reply.type === "cell.error" && (reply.code === "not_a_member" || reply.code === "not_found")) return notAMember;
    const members = expectCellReply(request, reply);
    if (members.conversationId !== conversationId)
      throw new RemoteError(
        "internal",
        `cell ${outcome.home.cellId} answered cell.members for ${members.conversationId}, not ${conversationId}`,
      );
    const list = memberList(members.memberUserIds);
    this.cache.set(conversationId, list);
    return list.members.has(userId) ? { kind: "members", memberUserIds: list.memberUserIds } : notAMember;
  }
}

function memberList(memberUserIds: readonly string[]): MemberList {
  return { memberUserIds: [...memberUserIds], members: new Set(memberUserIds) };
}
