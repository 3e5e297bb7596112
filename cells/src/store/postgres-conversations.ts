// Conversations and their members in Postgres: creating them, adding members, receipts, member reads.
// Every write is fenced in the statement that locks the conversation row (postgres-store.ts).
import type { NodePgDatabase } from "drizzle-orm/node-postgres";
import { and, eq, lte, sql } from "drizzle-orm";
import { joinedEventId, type ConversationSummary, type JoinedEvent } from "@cellwire/protocol";
import { conversationMembers, conversations, outbox as outboxTable, readPositions } from "./schema.ts";
import { readRefusal } from "./key-state.ts";
import { advancedPositions, positionsMoved, receiptEventOf, receiptRecipients } from "./receipt-positions.ts";
import { StoreRowError } from "./errors.ts";
import { type MembersResult } from "./store.ts";
import type {
  AddMembersInput,
  ConversationResult,
  CreateGroupInput,
  MarkReceiptInput,
  MarkReceiptResult,
  OpenDirectInput,
  OutboxEntry,
  StoreLimits,
} from "./store.ts";
import { fenced, safeInteger, keyRowFromRecord, readMembers, conversationRefusal, type Executor } from "./postgres-rows.ts";

/** The ConversationStore operations on conversations and members: openDirect, createGroup, addMembers, markReceipt, members, sharedPeers. */
export class PostgresConversations {
  constructor(
    private readonly database: NodePgDatabase,
    private readonly limits: StoreLimits,
  ) {}

  async openDirect(input: OpenDirectInput): Promise<ConversationResult<"not_a_member" | "invalid_peer">> {
    if (input.userId === input.peerUserId) return { outcome: "invalid_peer" };
    return this.database.transaction(async (transaction) => {
      const claimed = await claimConversation(
        transaction,
        { id: input.conversationId, kind: "direct", title: null, createdByUserId: input.userId },
        input.epoch,
      );
      // A tombstone is a row too: the claim does not re-create a conversation that moved away.
      if (claimed === "refused") return (await conversationRefusal(transaction, input.conversationId, input.epoch)) ?? fenced;
      const joined =
        claimed === "created" ? await addMemberRows(transaction, input.conversationId, [input.userId, input.peerUserId], 0) : [];
      const summary = await readSummary(transaction, input.conversationId);
      if (summary === undefined || !summary.memberUserIds.includes(input.userId)) return { outcome: "not_a_member" };
      return {
        outcome: "conversation",
        conversation: summary,
        outbox: await writeJoinedEvents(transaction, summary, joined, input.userId, 0),
      };
    });
  }

  async createGroup(input: CreateGroupInput): Promise<ConversationResult<"not_a_member" | "too_many_members">> {
    const memberUserIds = [...new Set([input.creatorUserId, ...input.memberUserIds])];
    if (memberUserIds.length > this.limits.groupMembersMax) return { outcome: "too_many_members" };
    return this.database.transaction(async (transaction) => {
      const claimed = await claimConversation(
        transaction,
        { id: input.conversationId, kind: "group", title: input.title, createdByUserId: input.creatorUserId },
        input.epoch,
      );
      if (claimed === "refused") return (await conversationRefusal(transaction, input.conversationId, input.epoch)) ?? fenced;
      const joined = claimed === "created" ? await addMemberRows(transaction, input.conversationId, memberUserIds, 0) : [];
      const summary = await readSummary(transaction, input.conversationId);
      if (summary === undefined || summary.kind !== "group" || !summary.memberUserIds.includes(input.creatorUserId)) {
        return { outcome: "not_a_member" };
      }
      return {
        outcome: "conversation",
        conversation: summary,
        outbox: await writeJoinedEvents(transaction, summary, joined, input.creatorUserId, 0),
      };
    });
  }

  async addMembers(input: AddMembersInput): Promise<ConversationResult<"not_a_member" | "not_a_group" | "too_many_members">> {
    return this.database.transaction(async (transaction) => {
      // Fenced and locked by one statement; the row lock then serialises concurrent additions, so two of
      // them cannot both pass the member limit.
      const locked = await transaction
        .update(conversations)
        .set({ ownerEpoch: input.epoch })
        .where(
          and(eq(conversations.id, input.conversationId), lte(conversations.ownerEpoch, input.epoch), eq(conversations.state, "active")),
        )
        .returning({ kind: conversations.kind, lastSeq: conversations.lastSeq });
      const conversation = locked[0];
      if (conversation === undefined)
        return (await conversationRefusal(transaction, input.conversationId, input.epoch, input.userId)) ?? { outcome: "not_a_member" };
      const current = new Set(await readMembers(transaction, input.conversationId));
      if (!current.has(input.userId)) return { outcome: "not_a_member" };
      if (conversation.kind !== "group") return { outcome: "not_a_group" };
      const added = [...new Set(input.userIds)].filter((userId) => !current.has(userId));
      if (current.size + added.length > this.limits.groupMembersMax) return { outcome: "too_many_members" };
      // Under the row lock no send can take a seq meanwhile: the new members follow the log after this one.
      const joinedAfterSeq = safeInteger(conversation.lastSeq, "conversations.last_seq");
      const joined = added.length === 0 ? [] : await addMemberRows(transaction, input.conversationId, added, joinedAfterSeq);
      if (joined.length > 0) {
        await transaction
          .update(conversations)
          .set({ membersVersion: sql`${conversations.membersVersion} + 1` })
          .where(eq(conversations.id, input.conversationId));
      }
      const summary = await readSummary(transaction, input.conversationId);
      if (summary === undefined) throw new StoreRowError(`conversation ${input.conversationId} vanished under its lock`);
      return {
        outcome: "conversation",
        conversation: summary,
        outbox: await writeJoinedEvents(transaction, summary, joined, input.userId, joinedAfterSeq),
      };
    });
  }

  async markReceipt(input: MarkReceiptInput): Promise<MarkReceiptResult> {
    const { conversationId, userId, epoch } = input;
    return this.database.transaction(async (transaction) => {
      // Fenced and locked by one statement, as addMembers: the conversation row's lock orders concurrent
      // receipts (and sends), so the positions read below are the latest and the outbox rows are written
      // in the same transaction as the advance they announce.
      const locked = await transaction
        .update(conversations)
        .set({ ownerEpoch: epoch })
        .where(and(eq(conversations.id, conversationId), lte(conversations.ownerEpoch, epoch), eq(conversations.state, "active")))
        .returning({ lastSeq: conversations.lastSeq });
      const conversation = locked[0];
      if (conversation === undefined)
        return (await conversationRefusal(transaction, conversationId, epoch, userId)) ?? { outcome: "not_a_member" };
      const members = await readMembers(transaction, conversationId);
      if (!members.includes(userId)) return { outcome: "not_a_member" };
      const lastSeq = safeInteger(conversation.lastSeq, "conversations.last_seq");
      if (input.seq > lastSeq) return { outcome: "seq_beyond_last", lastSeq };
      const stored = await transaction
        .select({ readSeq: readPositions.readSeq, deliveredSeq: readPositions.deliveredSeq })
        .from(readPositions)
        .where(and(eq(readPositions.conversationId, conversationId), eq(readPositions.userId, userId)));
      const row = stored[0];
      const before = {
        readSeq: row === undefined ? 0 : safeInteger(row.readSeq, "read_positions.read_seq"),
        deliveredSeq: row === undefined ? 0 : safeInteger(row.deliveredSeq, "read_positions.delivered_seq"),
      };
      const after = advancedPositions(before, input.position, input.seq);
      if (!positionsMoved(before, after)) return { outcome: "receipt", ...before, outbox: [] };
      await transaction
        .insert(readPositions)
        .values({ conversationId, userId, ...after })
        .onConflictDoUpdate({ target: [readPositions.conversationId, readPositions.userId], set: { ...after, updatedAt: sql`now()` } });
      const { eventId, event } = receiptEventOf(conversationId, userId, after);
      const recipients = receiptRecipients(members, userId, after.readSeq !== before.readSeq, input.fanOutMembersMax);
      if (recipients.length === 0) return { outcome: "receipt", ...after, outbox: [] };
      // An equal event id already pending for a recipient is the same receipt: nothing more to write.
      const written = await transaction
        .insert(outboxTable)
        .values(recipients.map((recipientUserId) => ({ conversationId, recipientUserId, eventId, event })))
        .onConflictDoNothing()
        .returning({ id: outboxTable.id, recipientUserId: outboxTable.recipientUserId });
      const entries = written
        .map(({ id, recipientUserId }): OutboxEntry => ({
          id: safeInteger(id, "outbox.id"),
          conversationId,
          recipientUserId,
          eventId,
          event,
        }))
        .sort((left, right) => left.id - right.id);
      return { outcome: "receipt", ...after, outbox: entries };
    });
  }

  async members(conversationId: string): Promise<MembersResult> {
    // One statement, so the state and the members come from one snapshot.
    const result = await this.database.execute(sql`
      select conversations.state, conversations.moving_to_cell_id, conversations.moved_epoch, conversations.owner_epoch,
             coalesce(conversations.members_version, 0) as members_version,
             array(select user_id from conversation_members where conversation_id = wanted.id order by user_id collate "C") as member_user_ids
      from (select ${conversationId}::text as id) wanted
      left join conversations on conversations.id = wanted.id
    `);
    const row = result.rows[0];
    if (row === undefined) throw new StoreRowError("members returned no row");
    if (row["state"] !== null) {
      const refusal = readRefusal(keyRowFromRecord(row));
      if (refusal !== undefined) return refusal;
    }
    const memberUserIds: unknown = row["member_user_ids"];
    if (!Array.isArray(memberUserIds) || !memberUserIds.every((userId): userId is string => typeof userId === "string")) {
      throw new StoreRowError("members row: member_user_ids must be an array of strings");
    }
    return { outcome: "members", memberUserIds, membersVersion: safeInteger(row["members_version"], "conversations.members_version") };
  }

  async sharedPeers(userId: string, peerUserIds: readonly string[]): Promise<string[]> {
    if (peerUserIds.length === 0) return [];
    // Both sides by index (conversation_members_user_id_index, then the primary key): the user's
    // conversations, and in each only the peers asked about.
    const result = await this.database.execute(sql`
      select distinct theirs.user_id
      from conversation_members mine
      join conversation_members theirs on theirs.conversation_id = mine.conversation_id
      where mine.user_id = ${userId}::text and theirs.user_id = any(${sql.param([...peerUserIds])}::text[])
    `);
    const shared = result.rows.map((row) => {
      const peerUserId: unknown = row["user_id"];
      if (typeof peerUserId !== "string") throw new StoreRowError("sharedPeers row: user_id must be a string");
      return peerUserId;
    });
    // User ids are ASCII (the allowlist), so this is the byte order the memory store sorts by too.
    return shared.sort();
  }
}

type NewConversation = Pick<typeof conversations.$inferInsert, "id" | "kind" | "title" | "createdByUserId">;

/**
 * One statement: inserts the conversation with `epoch`, or, when it exists, is active and was not written
 * under a later epoch, raises its epoch (which also locks the row for the rest of the transaction).
 * Neither means it exists with a later epoch or migrating (or moved): refused, and the row says why.
 */
async function claimConversation(
  executor: Executor,
  conversation: NewConversation,
  epoch: number,
): Promise<"created" | "existing" | "refused"> {
  const rows = await executor
    .insert(conversations)
    .values({ ...conversation, ownerEpoch: epoch })
    .onConflictDoUpdate({
      target: conversations.id,
      set: { ownerEpoch: epoch },
      setWhere: and(lte(conversations.ownerEpoch, epoch), eq(conversations.state, "active")),
    })
    // xmax is 0 on a row version this statement inserted, and set on one it updated (a known Postgres idiom).
    .returning({ inserted: sql`(xmax = 0)` });
  const row = rows[0];
  if (row === undefined) return "refused";
  if (typeof row.inserted !== "boolean") throw new StoreRowError("claim row: inserted must be a boolean");
  return row.inserted ? "created" : "existing";
}

/** Inserts member rows with their join point; returns the users actually added (not already members). */
async function addMemberRows(
  executor: Executor,
  conversationId: string,
  userIds: readonly string[],
  joinedAfterSeq: number,
): Promise<string[]> {
  const inserted = await executor
    .insert(conversationMembers)
    .values(userIds.map((userId) => ({ conversationId, userId, joinedAfterSeq })))
    .onConflictDoNothing()
    .returning({ userId: conversationMembers.userId });
  return inserted.map((row) => row.userId);
}

/**
 * One `joined` outbox row per new member, in the transaction that made them members, so a member is
 * never added without the event that tells their devices (nor the event written without the member).
 */
async function writeJoinedEvents(
  executor: Executor,
  summary: ConversationSummary,
  joinedUserIds: readonly string[],
  addedByUserId: string,
  afterSeq: number,
): Promise<OutboxEntry[]> {
  if (joinedUserIds.length === 0) return [];
  const event: JoinedEvent = {
    kind: "joined",
    conversationId: summary.conversationId,
    conversationKind: summary.kind,
    title: summary.title,
    afterSeq,
    addedByUserId,
  };
  const eventId = joinedEventId(event);
  const written = await executor
    .insert(outboxTable)
    .values(
      [...joinedUserIds].sort().map((recipientUserId) => ({ conversationId: summary.conversationId, recipientUserId, eventId, event })),
    )
    .onConflictDoNothing()
    .returning({ id: outboxTable.id, recipientUserId: outboxTable.recipientUserId });
  return written
    .map(({ id, recipientUserId }): OutboxEntry => ({
      id: safeInteger(id, "outbox.id"),
      conversationId: summary.conversationId,
      recipientUserId,
      eventId,
      event,
    }))
    .sort((left, right) => left.id - right.id);
}

async function readSummary(executor: Executor, conversationId: string): Promise<ConversationSummary | undefined> {
  const rows = await executor
    .select({ kind: conversations.kind, title: conversations.title, lastSeq: conversations.lastSeq })
    .from(conversations)
    .where(eq(conversations.id, conversationId));
  const row = rows[0];
  if (row === undefined) return undefined;
  const lastSeq = safeInteger(row.lastSeq, "conversations.last_seq");
  return { conversationId, kind: row.kind, title: row.title, memberUserIds: await readMembers(executor, conversationId), lastSeq };
}
