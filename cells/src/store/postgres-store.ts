// The ConversationStore on a cell's Postgres database (drizzle-orm over a pg Pool).
//
// Ordering does not trust leases: a message's seq comes from `UPDATE conversations SET last_seq =
// last_seq + 1` in the same statement that inserts the message, so the conversation row's lock orders
// concurrent writers, even two workers that both believe they own the conversation. A statement that
// fails (a concurrent duplicate retry) rolls its increment back with it: no gap, no repeated seq. The
// mailbox seq works the same way on the `mailboxes` row, and the outbox rows of a message are written by
// the statement that stores it, so a message is never stored without them (nor them without it).
//
// Fencing does not trust leases either: every write that orders or changes a conversation or a mailbox
// carries the writer's ring epoch and, in the statement that takes the row lock, requires
// `owner_epoch <= epoch` and sets `owner_epoch = epoch`. A worker that lost the key (paused past its
// lease, or behind on the membership watch) therefore cannot commit once the new owner has written.
import { trimToPageBudget } from "./page-budget.ts";
import { randomUUID } from "node:crypto";
import { and, eq, lte, sql, type SQL } from "drizzle-orm";
import { drizzle, type NodePgDatabase, type NodePgQueryResultHKT } from "drizzle-orm/node-postgres";
import type { PgDatabase } from "drizzle-orm/pg-core";
import type { Pool } from "pg";
import {
  decode,
  groupMembersMax,
  isRecord,
  mailboxEvent as mailboxEventDecoder,
  message as messageDecoder,
  messageEventId,
  type ConversationSummary,
  type Message,
  type SequencedEvent,
} from "@cellwire/protocol";
import { conversationMembers, conversations, outbox as outboxTable, readPositions } from "./schema.ts";
import { advancedPositions, positionsMoved, receiptEventOf, receiptRecipients } from "./receipt-positions.ts";
import { StoreRowError, postgresErrorCode, uniqueViolation } from "./errors.ts";
import type {
  AddMembersInput,
  AppendMailboxInput,
  AppendMailboxResult,
  AppendMessageInput,
  AppendMessageResult,
  ConversationResult,
  ConversationStore,
  CreateGroupInput,
  HistoryInput,
  HistoryResult,
  MailboxPage,
  MailboxPageInput,
  MarkReceiptInput,
  MarkReceiptResult,
  OpenDirectInput,
  OutboxEntry,
  OutboxPage,
  OutboxQuery,
  StoreLimits,
} from "./store.ts";

const fenced = { outcome: "fenced" } as const;

/** The database or a transaction on it: both run the same queries. */
type Executor = PgDatabase<NodePgQueryResultHKT>;

/**
 * A first attempt and one retry: the retry follows a unique violation from a concurrent duplicate of the
 * same send (or mailbox event), and then finds that duplicate's row. A second violation would be a bug,
 * so it is thrown.
 */
const appendAttemptsMax = 2;

async function retryingUniqueViolation<T>(attempt: () => Promise<T>): Promise<T> {
  for (let count = 1; ; count++) {
    try {
      return await attempt();
    } catch (error) {
      if (count >= appendAttemptsMax || postgresErrorCode(error) !== uniqueViolation) throw error;
    }
  }
}

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
    return retryingUniqueViolation(() => this.appendOnce(input));
  }

  private async appendOnce(input: AppendMessageInput): Promise<AppendMessageResult> {
    const { conversationId, senderUserId, senderDeviceId, clientMessageId, body, epoch } = input;
    const messageId = randomUUID();
    const eventId = messageEventId(messageId);
    // One statement, so one snapshot and one implicit transaction: either the existing row of this
    // (conversation, sender, clientMessageId) comes back, or the conversation's last_seq is advanced
    // (only when the sender is a member and the conversation was not written under a later epoch), the
    // message inserted with it, and one outbox row per member written with the message's mailbox event.
    // The fence is part of the UPDATE's condition, so Postgres re-checks it on the newest row version once
    // it holds the lock. The members are those of the statement's snapshot: a member added by a
    // transaction that commits while this statement waits for the row lock gets the message in history,
    // not in the mailbox.
    const result = await this.database.execute(sql`
      with existing as (
        select ${messageColumns}, true as deduplicated
        from messages
        where conversation_id = ${conversationId}::text
          and sender_user_id = ${senderUserId}::text
          and client_message_id = ${clientMessageId}::text
      ),
      advanced as (
        update conversations set last_seq = last_seq + 1, owner_epoch = ${epoch}::bigint
        where id = ${conversationId}::text
          and owner_epoch <= ${epoch}::bigint
          and not exists (select 1 from existing)
          and exists (
            select 1 from conversation_members
            where conversation_id = ${conversationId}::text and user_id = ${senderUserId}::text
          )
        returning last_seq
      ),
      inserted as (
        insert into messages (conversation_id, seq, message_id, sender_user_id, sender_device_id, client_message_id, body)
        select ${conversationId}::text, advanced.last_seq, ${messageId}::text, ${senderUserId}::text,
               ${senderDeviceId}::text, ${clientMessageId}::text, ${body}::text
        from advanced
        returning ${messageColumns}, false as deduplicated
      ),
      outboxed as (
        insert into outbox (conversation_id, recipient_user_id, event_id, event)
        select ${conversationId}::text, members.user_id, ${eventId}::text,
               jsonb_build_object('kind', 'message', 'message', jsonb_build_object(
                 'conversationId', inserted.conversation_id, 'messageId', inserted.message_id, 'seq', inserted.seq,
                 'senderUserId', inserted.sender_user_id, 'senderDeviceId', inserted.sender_device_id,
                 'clientMessageId', inserted.client_message_id, 'body', inserted.body, 'sentAtMs', inserted.sent_at_ms))
        from inserted
        join conversation_members members on members.conversation_id = ${conversationId}::text
        order by members.user_id collate "C"
        returning id, recipient_user_id
      )
      select existing.*, '{}'::bigint[] as outbox_ids, '{}'::text[] as outbox_recipient_user_ids from existing
      union all
      select inserted.*,
             array(select id from outboxed order by id),
             array(select recipient_user_id from outboxed order by id)
      from inserted
    `);
    const row = result.rows[0];
    if (row === undefined) return (await this.writtenAfter(conversationId, epoch)) ? fenced : { outcome: "not_a_member" };
    if (result.rows.length > 1) throw new StoreRowError(`append returned ${result.rows.length} rows for one message`);
    const deduplicated = row["deduplicated"];
    if (typeof deduplicated !== "boolean") throw new StoreRowError("append row: deduplicated must be a boolean");
    const message = messageFromRow(row);
    const ids = row["outbox_ids"];
    const recipients = row["outbox_recipient_user_ids"];
    if (!Array.isArray(ids) || !Array.isArray(recipients) || ids.length !== recipients.length) {
      throw new StoreRowError("append row: outbox ids and recipients must be arrays of one length");
    }
    // The rows hold exactly this event (built by the statement from the row it returned).
    const outbox = ids.map((id: unknown, index): OutboxEntry => {
      const recipientUserId: unknown = recipients[index];
      if (typeof recipientUserId !== "string") throw new StoreRowError("append row: an outbox recipient must be a string");
      return { id: safeInteger(id, "outbox.id"), conversationId, recipientUserId, eventId: messageEventId(message.messageId), event: { kind: "message", message } };
    });
    return { outcome: "stored", message, deduplicated, outbox };
  }

  async openDirect(input: OpenDirectInput): Promise<ConversationResult<"not_a_member" | "invalid_peer">> {
    if (input.userId === input.peerUserId) return { outcome: "invalid_peer" };
    return this.database.transaction(async (transaction) => {
      const claimed = await claimConversation(transaction, { id: input.conversationId, kind: "direct", title: null, createdByUserId: input.userId }, input.epoch);
      if (claimed === "fenced") return fenced;
      if (claimed === "created") {
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
      const claimed = await claimConversation(
        transaction,
        { id: input.conversationId, kind: "group", title: input.title, createdByUserId: input.creatorUserId },
        input.epoch,
      );
      if (claimed === "fenced") return fenced;
      if (claimed === "created") {
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
      // Fenced and locked by one statement; the row lock then serialises concurrent additions, so two of
      // them cannot both pass the member limit.
      const locked = await transaction
        .update(conversations)
        .set({ ownerEpoch: input.epoch })
        .where(and(eq(conversations.id, input.conversationId), lte(conversations.ownerEpoch, input.epoch)))
        .returning({ kind: conversations.kind });
      const conversation = locked[0];
      if (conversation === undefined) return (await this.writtenAfter(input.conversationId, input.epoch, transaction)) ? fenced : { outcome: "not_a_member" };
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

  async markReceipt(input: MarkReceiptInput): Promise<MarkReceiptResult> {
    const { conversationId, userId, epoch } = input;
    return this.database.transaction(async (transaction) => {
      // Fenced and locked by one statement, as addMembers: the conversation row's lock orders concurrent
      // receipts (and sends), so the positions read below are the latest and the outbox rows are written
      // in the same transaction as the advance they announce.
      const locked = await transaction
        .update(conversations)
        .set({ ownerEpoch: epoch })
        .where(and(eq(conversations.id, conversationId), lte(conversations.ownerEpoch, epoch)))
        .returning({ lastSeq: conversations.lastSeq });
      const conversation = locked[0];
      if (conversation === undefined) return (await this.writtenAfter(conversationId, epoch, transaction)) ? fenced : { outcome: "not_a_member" };
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
        .map(({ id, recipientUserId }): OutboxEntry => ({ id: safeInteger(id, "outbox.id"), conversationId, recipientUserId, eventId, event }))
        .sort((left, right) => left.id - right.id);
      return { outcome: "receipt", ...after, outbox: entries };
    });
  }

  async members(conversationId: string): Promise<string[]> {
    return readMembers(this.database, conversationId);
  }

  async appendMailbox(input: AppendMailboxInput): Promise<AppendMailboxResult> {
    return retryingUniqueViolation(() => this.appendMailboxOnce(input));
  }

  private async appendMailboxOnce(input: AppendMailboxInput): Promise<AppendMailboxResult> {
    const { userId, eventId, event, epoch } = input;
    // One statement, as for messages: the existing seq of (user, event) comes back, or the mailbox row is
    // created (with the epoch) or advanced if it was not written under a later epoch (its lock orders
    // concurrent appenders and the fence is re-checked under it) and the event inserted with the new seq.
    // No row at all means the fence refused. A concurrent duplicate fails on the (user_id, event_id)
    // unique key, rolling its increment back.
    const result = await this.database.execute(sql`
      with existing as (
        select seq from mailbox_events where user_id = ${userId}::text and event_id = ${eventId}::text
      ),
      advanced as (
        insert into mailboxes (user_id, last_seq, owner_epoch)
        select ${userId}::text, 1, ${epoch}::bigint
        where not exists (select 1 from existing)
        on conflict (user_id) do update set last_seq = mailboxes.last_seq + 1, owner_epoch = excluded.owner_epoch
          where mailboxes.owner_epoch <= excluded.owner_epoch
        returning last_seq
      ),
      inserted as (
        insert into mailbox_events (user_id, seq, event_id, event)
        select ${userId}::text, advanced.last_seq, ${eventId}::text, ${JSON.stringify(event)}::jsonb
        from advanced
        returning seq
      )
      select seq, true as deduplicated from existing
      union all
      select seq, false as deduplicated from inserted
    `);
    const row = result.rows[0];
    if (row === undefined) return fenced;
    if (result.rows.length > 1) throw new StoreRowError(`mailbox append returned ${result.rows.length} rows`);
    const deduplicated = row["deduplicated"];
    if (typeof deduplicated !== "boolean") throw new StoreRowError("mailbox append row: deduplicated must be a boolean");
    return { outcome: "appended", seq: safeInteger(row["seq"], "mailbox_events.seq"), deduplicated };
  }

  async mailboxPage(input: MailboxPageInput): Promise<MailboxPage> {
    const { userId, afterSeq, limit } = input;
    // One statement, so the head and the events come from one snapshot. Always at least one row: the
    // user's (possibly missing) mailbox, with no event columns when the page is empty.
    const result = await this.database.execute(sql`
      select mailboxes.last_seq as head_seq, mailboxes.floor_seq, page.seq, page.event
      from (select ${userId}::text as user_id) wanted
      left join mailboxes on mailboxes.user_id = wanted.user_id
      left join lateral (
        select seq, event from mailbox_events
        where user_id = wanted.user_id and seq > ${afterSeq}::bigint
        order by seq
        limit ${limit}::integer
      ) page on true
      order by page.seq
    `);
    const first = result.rows[0];
    if (first === undefined) throw new StoreRowError("mailbox page returned no row");
    const headSeq = first["head_seq"] === null ? 0 : safeInteger(first["head_seq"], "mailboxes.last_seq");
    const floorSeq = first["floor_seq"] === null ? 0 : safeInteger(first["floor_seq"], "mailboxes.floor_seq");
    const events = result.rows.filter((row) => row["seq"] !== null).map(sequencedEventFromRow);
    return { events: trimToPageBudget(events).kept, headSeq, floorSeq };
  }

  async trimMailbox(userId: string, throughSeq: number): Promise<number> {
    // The floor moves under the mailbox row's lock, so a concurrent append cannot slip an event below it.
    return this.database.transaction(async (transaction) => {
      const raised = await transaction.execute(sql`
        update mailboxes set floor_seq = greatest(floor_seq, least(${throughSeq}::bigint, last_seq))
        where user_id = ${userId}::text
        returning floor_seq
      `);
      const row = raised.rows[0];
      if (row === undefined) return 0;
      const floorSeq = safeInteger(row["floor_seq"], "mailboxes.floor_seq");
      await transaction.execute(sql`delete from mailbox_events where user_id = ${userId}::text and seq <= ${floorSeq}::bigint`);
      return floorSeq;
    });
  }

  async pendingOutbox(query: OutboxQuery): Promise<OutboxPage> {
    const conditions: SQL[] = [sql`id > ${query.afterId}::bigint`];
    if (query.conversationId !== undefined) conditions.push(sql`conversation_id = ${query.conversationId}::text`);
    if (query.olderThanMs > 0) conditions.push(sql`created_at <= now() - ${query.olderThanMs}::double precision * interval '1 millisecond'`);
    const result = await this.database.execute(sql`
      select id, conversation_id, recipient_user_id, event_id, event
      from outbox
      where ${sql.join(conditions, sql` and `)}
      order by id
      limit ${query.limit}::integer
    `);
    const entries: OutboxEntry[] = [];
    const malformed: { id: number; reason: string }[] = [];
    let lastId: number | undefined;
    for (const row of result.rows) {
      const id = safeInteger(row["id"], "outbox.id");
      lastId = id;
      const entry = outboxEntryFromRow(id, row);
      if (typeof entry === "string") malformed.push({ id, reason: entry });
      else entries.push(entry);
    }
    return { entries, malformed, lastId };
  }

  /**
   * Whether the conversation was written under an epoch later than `epoch`: tells a fenced write from a
   * refusal after a statement that did nothing. Epochs only grow, so reading after the statement cannot
   * miss a fence that refused it (at worst a refusal is reported as fenced, and the new owner answers it).
   */
  private async writtenAfter(conversationId: string, epoch: number, executor: Executor = this.database): Promise<boolean> {
    const rows = await executor
      .select({ ownerEpoch: conversations.ownerEpoch })
      .from(conversations)
      .where(eq(conversations.id, conversationId));
    const row = rows[0];
    return row !== undefined && safeInteger(row.ownerEpoch, "conversations.owner_epoch") > epoch;
  }

  async deleteOutbox(ids: readonly number[]): Promise<void> {
    if (ids.length === 0) return;
    await this.database.execute(sql`delete from outbox where id = any(${idArray(ids)}::bigint[])`);
  }

  async markOutboxAttempt(ids: readonly number[]): Promise<void> {
    if (ids.length === 0) return;
    await this.database.execute(sql`update outbox set attempts = attempts + 1 where id = any(${idArray(ids)}::bigint[])`);
  }
}

/** A Postgres array literal of ids; each is checked to be a safe integer, so nothing else can get in. */
function idArray(ids: readonly number[]): string {
  for (const id of ids) {
    if (!Number.isSafeInteger(id)) throw new RangeError(`outbox id ${String(id)} is not a safe integer`);
  }
  return `{${ids.join(",")}}`;
}

/** The entry, or why the row does not decode. */
function outboxEntryFromRow(id: number, row: Record<string, unknown>): OutboxEntry | string {
  const conversationId = row["conversation_id"];
  const recipientUserId = row["recipient_user_id"];
  const eventId = row["event_id"];
  if (typeof conversationId !== "string" || typeof recipientUserId !== "string" || typeof eventId !== "string") {
    return "conversation_id, recipient_user_id and event_id must be strings";
  }
  const event = decode(mailboxEventDecoder, row["event"]);
  if (!event.ok) return `event: ${event.failure.path} ${event.failure.reason}`;
  return { id, conversationId, recipientUserId, eventId, event: event.value };
}

function sequencedEventFromRow(row: Record<string, unknown>): SequencedEvent {
  const seq = safeInteger(row["seq"], "mailbox_events.seq");
  // jsonb comes back parsed, but what it holds is still checked: the protocol decoder decides.
  const event = decode(mailboxEventDecoder, row["event"]);
  if (!event.ok) throw new StoreRowError(`mailbox event ${seq}: ${event.failure.path} ${event.failure.reason}`);
  return { seq, event: event.value };
}

type NewConversation = Pick<typeof conversations.$inferInsert, "id" | "kind" | "title" | "createdByUserId">;

/**
 * One statement: inserts the conversation with `epoch`, or, when it exists and was not written under a
 * later epoch, raises its epoch (which also locks the row for the rest of the transaction). Neither means
 * it exists with a later epoch: fenced.
 */
async function claimConversation(executor: Executor, conversation: NewConversation, epoch: number): Promise<"created" | "existing" | "fenced"> {
  const rows = await executor
    .insert(conversations)
    .values({ ...conversation, ownerEpoch: epoch })
    .onConflictDoUpdate({ target: conversations.id, set: { ownerEpoch: epoch }, setWhere: lte(conversations.ownerEpoch, epoch) })
    // xmax is 0 on a row version this statement inserted, and set on one it updated (a known Postgres idiom).
    .returning({ inserted: sql`(xmax = 0)` });
  const row = rows[0];
  if (row === undefined) return "fenced";
  if (typeof row.inserted !== "boolean") throw new StoreRowError("claim row: inserted must be a boolean");
  return row.inserted ? "created" : "existing";
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
