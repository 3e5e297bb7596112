// A conversation's log in Postgres: the group commit of sends (its statement is postgres-sends.ts) and the
// reads of messages. Ordering and fencing as postgres-store.ts's opening comment states.
import type { Pool } from "pg";
import type { NodePgDatabase } from "drizzle-orm/node-postgres";
import { trimToPageBudget } from "./page-budget.ts";
import { sql } from "drizzle-orm";
import { frozenForNonMember, readRefusal, writeRefusal, type KeyRow } from "./key-state.ts";
import { StoreRowError } from "./errors.ts";
import { storeSends } from "./postgres-sends.ts";
import { sendKey, type SendKey, type MessagesAfterInput, type MessagesAfterResult } from "./store.ts";
import type { AppendMessageInput, AppendMessageResult, HistoryInput, HistoryResult } from "./store.ts";
import { messageColumns, safeInteger, messageFromRow, keyRowFromRecord, retryingUniqueViolation, type Executor } from "./postgres-rows.ts";

/** The ConversationStore operations on messages: appendMessages, settledSends, messagesAfter, history. */
export class PostgresMessages {
  /** `sendPool`: the connections the group commit's statement runs on (see PostgresConversationStore). */
  constructor(
    private readonly database: NodePgDatabase,
    private readonly sendPool: Pool,
  ) {}

  async appendMessages(inputs: readonly AppendMessageInput[]): Promise<AppendMessageResult[]> {
    if (inputs.length === 0) return [];
    const rows = await retryingUniqueViolation(() => storeSends(this.sendPool, inputs, messageFromRow));
    const results: (AppendMessageResult | undefined)[] = new Array<AppendMessageResult | undefined>(inputs.length);
    for (const row of rows) {
      if (results[row.index] !== undefined) throw new StoreRowError(`the send batch returned two rows for input ${row.index}`);
      // The statement returns a repeated send's stored message, body included: telling a retry from a
      // reused id costs one comparison here, no statement or round trip.
      results[row.index] = !row.deduplicated
        ? { outcome: "stored", message: row.message, deduplicated: false, membersVersion: row.membersVersion }
        : row.message.body === inputs[row.index]?.body
          ? { outcome: "stored", message: row.message, deduplicated: true }
          : { outcome: "client_message_id_reused" };
    }
    const refusedConversationIds = [
      ...new Set(inputs.filter((_, index) => results[index] === undefined).map((input) => input.conversationId)),
    ];
    if (refusedConversationIds.length === 0) return results as AppendMessageResult[];
    // Only refused sends cost this read: each conversation's row says why (fence, migration), or nothing
    // does and the sender was not a member. This read comes after the statement, so the row may have
    // changed since the statement's snapshot: an import that activated the conversation here in between
    // leaves an active row that explains nothing. A sender who is a member now was refused for a state
    // that no longer holds, so the answer is the statement's own (`moving`), which the caller retries.
    // A frozen conversation's refusal needs the membership too: a non-member is told not_a_member
    // (key-state.ts, frozenForNonMember).
    const keyRows = await readConversationKeyRows(this.database, refusedConversationIds);
    const refusalOf = (input: AppendMessageInput) => writeRefusal(keyRows.get(input.conversationId), input.epoch);
    const membershipNeeded = inputs.filter(
      (input, index) => results[index] === undefined && (refusalOf(input) === undefined || refusalOf(input)?.outcome === "moving"),
    );
    const membersNow = membershipNeeded.length === 0 ? new Set<string>() : await readMemberships(this.database, membershipNeeded);
    return inputs.map((input, index): AppendMessageResult => {
      const result = results[index];
      if (result !== undefined) return result;
      const refusal = refusalOf(input);
      const isMember = membersNow.has(membershipKey(input.conversationId, input.senderUserId));
      if (frozenForNonMember(keyRows.get(input.conversationId), refusal, isMember)) return { outcome: "not_a_member" };
      return refusal ?? (isMember ? { outcome: "moving" } : { outcome: "not_a_member" });
    });
  }

  async settledSends(keys: readonly SendKey[]): Promise<ReadonlySet<string>> {
    const stored = new Set<string>();
    if (keys.length === 0) return stored;
    // On the sends' own connections, as the batch it serves; the unique index on (conversation, sender,
    // clientMessageId) and the members' primary key answer it.
    const result = await this.sendPool.query(
      `select wanted.conversation_id, wanted.sender_user_id, wanted.client_message_id
       from unnest($1::text[], $2::text[], $3::text[]) as wanted(conversation_id, sender_user_id, client_message_id)
       where exists (select 1 from messages where messages.conversation_id = wanted.conversation_id
                       and messages.sender_user_id = wanted.sender_user_id and messages.client_message_id = wanted.client_message_id)
          or not exists (select 1 from conversation_members where conversation_members.conversation_id = wanted.conversation_id
                           and conversation_members.user_id = wanted.sender_user_id)`,
      [keys.map((key) => key.conversationId), keys.map((key) => key.senderUserId), keys.map((key) => key.clientMessageId)],
    );
    for (const row of result.rows as Record<string, unknown>[]) {
      const conversationId = row["conversation_id"];
      const senderUserId = row["sender_user_id"];
      const clientMessageId = row["client_message_id"];
      if (typeof conversationId !== "string" || typeof senderUserId !== "string" || typeof clientMessageId !== "string") {
        throw new StoreRowError("messages ids must be strings");
      }
      stored.add(sendKey({ conversationId, senderUserId, clientMessageId }));
    }
    return stored;
  }

  async messagesAfter(input: MessagesAfterInput): Promise<MessagesAfterResult> {
    const { conversationId, userId, afterSeq, limit } = input;
    // One statement, so the state, the membership, the head and the page come from one snapshot. Always
    // at least one row (the conversation's, possibly missing), without message columns when the page is
    // empty.
    const result = await this.database.execute(sql`
      select conversations.state, conversations.moving_to_cell_id, conversations.moved_epoch, conversations.owner_epoch,
             conversations.last_seq as head_seq, members.joined_after_seq, start.after_seq,
             page.conversation_id, page.seq, page.message_id, page.sender_user_id, page.sender_device_id, page.client_message_id,
             page.body, floor(extract(epoch from page.sent_at) * 1000)::bigint as sent_at_ms
      from (select ${conversationId}::text as id) wanted
      left join conversations on conversations.id = wanted.id
      left join conversation_members members on members.conversation_id = wanted.id and members.user_id = ${userId}::text
      left join lateral (select coalesce(${afterSeq}::bigint, members.joined_after_seq) as after_seq) start on true
      left join lateral (
        select * from messages
        where members.user_id is not null and messages.conversation_id = wanted.id and messages.seq > start.after_seq
        order by messages.seq
        limit ${limit}::integer
      ) page on true
      order by page.seq
    `);
    const first = result.rows[0];
    if (first === undefined) throw new StoreRowError("messagesAfter returned no row");
    if (first["state"] === null) return { outcome: "not_a_member" };
    const refusal = readRefusal(keyRowFromRecord(first));
    if (refusal !== undefined) return refusal;
    if (first["joined_after_seq"] === null) return { outcome: "not_a_member" };
    const messages = result.rows.filter((row) => row["seq"] !== null).map(messageFromRow);
    return {
      outcome: "messages",
      afterSeq: safeInteger(first["after_seq"], "after_seq"),
      messages: trimToPageBudget(messages).kept,
      headSeq: safeInteger(first["head_seq"], "conversations.last_seq"),
    };
  }

  async history(input: HistoryInput): Promise<HistoryResult> {
    const { conversationId, userId, beforeSeq, limit } = input;
    // The state and the membership in one statement: a frozen conversation is still read here.
    const membership = await this.database.execute(sql`
      select state, moving_to_cell_id, moved_epoch, owner_epoch,
             exists (select 1 from conversation_members where conversation_id = ${conversationId}::text and user_id = ${userId}::text) as member
      from conversations where id = ${conversationId}::text
    `);
    const conversation = membership.rows[0];
    if (conversation === undefined) return { outcome: "not_a_member" };
    const refusal = readRefusal(keyRowFromRecord(conversation));
    if (refusal !== undefined) return refusal;
    if (conversation["member"] !== true) return { outcome: "not_a_member" };
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
}

/** A (conversation, user) pair as one string; ids admit no space (protocol/src/ids.ts). */
function membershipKey(conversationId: string, userId: string): string {
  return `${conversationId} ${userId}`;
}

/** Which of the sends' senders are members of their conversations now, as membershipKey strings. */
async function readMemberships(executor: Executor, sends: readonly AppendMessageInput[]): Promise<Set<string>> {
  const result = await executor.execute(sql`
    select conversation_members.conversation_id, conversation_members.user_id
    from unnest(${sql.param(sends.map((send) => send.conversationId))}::text[], ${sql.param(sends.map((send) => send.senderUserId))}::text[])
      as wanted(conversation_id, user_id)
    join conversation_members on conversation_members.conversation_id = wanted.conversation_id and conversation_members.user_id = wanted.user_id
  `);
  const members = new Set<string>();
  for (const row of result.rows) {
    const conversationId = row["conversation_id"];
    const userId = row["user_id"];
    if (typeof conversationId !== "string" || typeof userId !== "string")
      throw new StoreRowError("conversation_members ids must be strings");
    members.add(membershipKey(conversationId, userId));
  }
  return members;
}

/** The key rows of many conversations in one read (for the refusals of a send batch). */
async function readConversationKeyRows(executor: Executor, conversationIds: readonly string[]): Promise<Map<string, KeyRow>> {
  const result = await executor.execute(sql`
    select id, state, moving_to_cell_id, moved_epoch, owner_epoch from conversations
    where id = any(${sql.param(conversationIds)}::text[])
  `);
  const rows = new Map<string, KeyRow>();
  for (const row of result.rows) {
    const id = row["id"];
    if (typeof id !== "string") throw new StoreRowError("conversations.id must be a string");
    rows.set(id, keyRowFromRecord(row));
  }
  return rows;
}
