// The ConversationStore on a cell's Postgres database (drizzle-orm over a pg Pool).
//
// Ordering does not trust leases: a message's seq comes from `UPDATE conversations SET last_seq =
// last_seq + 1` in the same statement that inserts the message, so the conversation row's lock orders
// concurrent writers, even two workers that both believe they own the conversation. A statement that
// fails (a concurrent duplicate retry) rolls its increment back with it: no gap, no repeated seq.
import { trimToPageBudget } from "./page-budget.ts";
import { randomUUID } from "node:crypto";
import { and, eq, sql } from "drizzle-orm";
import { drizzle, type NodePgDatabase, type NodePgQueryResultHKT } from "drizzle-orm/node-postgres";
import type { PgDatabase } from "drizzle-orm/pg-core";
import type { Pool } from "pg";
import { decode, groupMembersMax, isRecord, message as messageDecoder, type ConversationSummary, type Message } from "@cellwire/protocol";
import { conversationMembers, conversations } from "./schema.ts";
import { StoreRowError, postgresErrorCode, uniqueViolation } from "./errors.ts";
import type {
  AddMembersInput,
  AppendMessageInput,
  AppendMessageResult,
  ConversationResult,
  ConversationStore,
  CreateGroupInput,
  HistoryInput,
  HistoryResult,
  OpenDirectInput,
  StoreLimits,
} from "./store.ts";

/** The database or a transaction on it: both run the same queries. */
type Executor = PgDatabase<NodePgQueryResultHKT>;

/**
 * A first attempt and one retry: the retry follows a unique violation from a concurrent duplicate of the
 * same send, and then finds that duplicate's row. A second violation would be a bug, so it is thrown.
 */
const appendAttemptsMax = 2;

// Every query that returns messages selects these columns, decoded by messageFromRow.
const messageColumns = sql.raw(
  `conversation_id, seq, message_id, sender_user_id, sender_device_id, client_message_id, body,
   floor(extract(epoch from sent_at) * 1000)::bigint as sent_at_ms`,
);

export class PostgresConversationStore implements ConversationStore {
  private readonly database: NodePgDatabase;
  private readonly limits: StoreLimits;

  constructor(pool: Pool, limits: Partial<StoreLimits> = {}) {
    this.database = drizzle({ client: pool });
    this.limits = { groupMembersMax: Math.min(limits.groupMembersMax ?? groupMembersMax, groupMembersMax) };
  }

  async appendMessage(input: AppendMessageInput): Promise<AppendMessageResult> {
    for (let attempt = 1; ; attempt++) {
      try {
        return await this.appendOnce(input);
      } catch (error) {
        if (attempt >= appendAttemptsMax || postgresErrorCode(error) !== uniqueViolation) throw error;
      }
    }
  }

  private async appendOnce(input: AppendMessageInput): Promise<AppendMessageResult> {
    const { conversationId, senderUserId, senderDeviceId, clientMessageId, body } = input;
    // One statement, so one snapshot and one implicit transaction: either the existing row of this
    // (conversation, sender, clientMessageId) comes back, or the conversation's last_seq is advanced
    // (only when the sender is a member) and the message inserted with it.
    const result = await this.database.execute(sql`
      with existing as (
        select ${messageColumns}, true as deduplicated
        from messages
        where conversation_id = ${conversationId}::text
          and sender_user_id = ${senderUserId}::text
          and client_message_id = ${clientMessageId}::text
      ),
      advanced as (
        update conversations set last_seq = last_seq + 1
        where id = ${conversationId}::text
          and not exists (select 1 from existing)
          and exists (
            select 1 from conversation_members
            where conversation_id = ${conversationId}::text and user_id = ${senderUserId}::text
          )
        returning last_seq
      ),
      inserted as (
        insert into messages (conversation_id, seq, message_id, sender_user_id, sender_device_id, client_message_id, body)
        select ${conversationId}::text, advanced.last_seq, ${randomUUID()}::text, ${senderUserId}::text,
               ${senderDeviceId}::text, ${clientMessageId}::text, ${body}::text
        from advanced
        returning ${messageColumns}, false as deduplicated
      )
      select * from existing
      union all
      select * from inserted
    `);
    const row = result.rows[0];
    if (row === undefined) return { outcome: "not_a_member" };
    if (result.rows.length > 1) throw new StoreRowError(`append returned ${result.rows.length} rows for one message`);
    const deduplicated = row["deduplicated"];
    if (typeof deduplicated !== "boolean") throw new StoreRowError("append row: deduplicated must be a boolean");
    return { outcome: "stored", message: messageFromRow(row), deduplicated };
  }

  async openDirect(input: OpenDirectInput): Promise<ConversationResult<"not_a_member" | "invalid_peer">> {
    if (input.userId === input.peerUserId) return { outcome: "invalid_peer" };
    return this.database.transaction(async (transaction) => {
      const created = await transaction
        .insert(conversations)
        .values({ id: input.conversationId, kind: "direct", title: null, createdByUserId: input.userId })
        .onConflictDoNothing()
        .returning({ id: conversations.id });
      if (created.length > 0) {
        await transaction
          .insert(conversationMembers)
          .values([input.userId, input.peerUserId].map((userId) => ({ conversationId: input.conversationId, userId })))
          .onConflictDoNothing();
      }
      const summary = await readSummary(transaction, input.conversationId);
      if (summary === undefined || !summary.memberUserIds.includes(input.userId)) return { outcome: "not_a_member" };
      return { outcome: "conversation", conversation: summary };
    });
  }

  async createGroup(input: CreateGroupInput): Promise<ConversationResult<"not_a_member" | "too_many_members">> {
    const memberUserIds = [...new Set([input.creatorUserId, ...input.memberUserIds])];
    if (memberUserIds.length > this.limits.groupMembersMax) return { outcome: "too_many_members" };
    return this.database.transaction(async (transaction) => {
      const created = await transaction
        .insert(conversations)
        .values({ id: input.conversationId, kind: "group", title: input.title, createdByUserId: input.creatorUserId })
        .onConflictDoNothing()
        .returning({ id: conversations.id });
      if (created.length > 0) {
        await transaction
          .insert(conversationMembers)
          .values(memberUserIds.map((userId) => ({ conversationId: input.conversationId, userId })))
          .onConflictDoNothing();
      }
      const summary = await readSummary(transaction, input.conversationId);
      if (summary === undefined || summary.kind !== "group" || !summary.memberUserIds.includes(input.creatorUserId)) {
        return { outcome: "not_a_member" };
      }
      return { outcome: "conversation", conversation: summary };
    });
  }

  async addMembers(input: AddMembersInput): Promise<ConversationResult<"not_a_member" | "not_a_group" | "too_many_members">> {
    return this.database.transaction(async (transaction) => {
      // The row lock serialises concurrent additions, so two of them cannot both pass the member limit.
      const locked = await transaction
        .select({ kind: conversations.kind })
        .from(conversations)
        .where(eq(conversations.id, input.conversationId))
        .for("update");
      const conversation = locked[0];
      if (conversation === undefined) return { outcome: "not_a_member" };
      const current = new Set(await readMembers(transaction, input.conversationId));
      if (!current.has(input.userId)) return { outcome: "not_a_member" };
      if (conversation.kind !== "group") return { outcome: "not_a_group" };
      const added = [...new Set(input.userIds)].filter((userId) => !current.has(userId));
      if (current.size + added.length > this.limits.groupMembersMax) return { outcome: "too_many_members" };
      if (added.length > 0) {
        await transaction
          .insert(conversationMembers)
          .values(added.map((userId) => ({ conversationId: input.conversationId, userId })))
          .onConflictDoNothing();
      }
      const summary = await readSummary(transaction, input.conversationId);
      if (summary === undefined) throw new StoreRowError(`conversation ${input.conversationId} vanished under its lock`);
      return { outcome: "conversation", conversation: summary };
    });
  }

  async history(input: HistoryInput): Promise<HistoryResult> {
    const { conversationId, userId, beforeSeq, limit } = input;
    const membership = await this.database
      .select({ userId: conversationMembers.userId })
      .from(conversationMembers)
      .where(and(eq(conversationMembers.conversationId, conversationId), eq(conversationMembers.userId, userId)))
      .limit(1);
    if (membership.length === 0) return { outcome: "not_a_member" };
    // One row past the page tells whether older messages exist.
    const result = await this.database.execute(sql`
      select ${messageColumns}
      from messages
      where conversation_id = ${conversationId}::text
        ${beforeSeq === null ? sql`` : sql`and seq < ${beforeSeq}::bigint`}
      order by seq desc
      limit ${limit + 1}::integer
    `);
    const { kept, trimmed } = trimToPageBudget(result.rows.slice(0, limit).map(messageFromRow));
    return { outcome: "history", messages: kept.reverse(), hasMore: trimmed || result.rows.length > limit };
  }

  async members(conversationId: string): Promise<string[]> {
    return readMembers(this.database, conversationId);
  }
}

async function readMembers(executor: Executor, conversationId: string): Promise<string[]> {
  const rows = await executor
    .select({ userId: conversationMembers.userId })
    .from(conversationMembers)
    .where(eq(conversationMembers.conversationId, conversationId))
    // Byte order, so the list sorts the same as JavaScript's default sort whatever the database collation.
    .orderBy(sql`${conversationMembers.userId} collate "C"`);
  return rows.map((row) => row.userId);
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

/** pg returns bigint columns as strings (a JavaScript number cannot hold every int8); convert only safe ones. */
function safeInteger(value: unknown, column: string): number {
  const number = typeof value === "number" ? value : typeof value === "string" && /^-?[0-9]{1,20}$/.test(value) ? Number(value) : Number.NaN;
  if (!Number.isSafeInteger(number)) throw new StoreRowError(`${column} is not a safe integer: ${String(value).slice(0, 40)}`);
  return number;
}

function messageFromRow(row: unknown): Message {
  if (!isRecord(row)) throw new StoreRowError("a message row must be an object");
  const candidate = {
    conversationId: row["conversation_id"],
    messageId: row["message_id"],
    seq: safeInteger(row["seq"], "messages.seq"),
    senderUserId: row["sender_user_id"],
    senderDeviceId: row["sender_device_id"],
    clientMessageId: row["client_message_id"],
    body: row["body"],
    sentAtMs: safeInteger(row["sent_at_ms"], "messages.sent_at"),
  };
  const decoded = decode(messageDecoder, candidate);
  if (!decoded.ok) throw new StoreRowError(`message row: ${decoded.failure.path} ${decoded.failure.reason}`);
  return decoded.value;
}
