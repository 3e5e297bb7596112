// The ConversationStore on a cell's Postgres database (drizzle-orm over a pg Pool).
//
// Ordering does not trust leases: a message's seq comes from `UPDATE conversations SET last_seq =
// last_seq + n` in the same statement that inserts the messages (postgres-sends.ts: many sends at once),
// so the conversation row's lock orders concurrent writers, even two workers that both believe they own
// the conversation. A statement that fails (a concurrent duplicate retry) rolls its increment back with
// it: no gap, no repeated seq. The mailbox seq works the same way on the `mailboxes` row. Messages have no
// outbox rows (docs/decisions/0009): the outbox carries the joined and receipt events written with the
// change they announce.
//
// Fencing does not trust leases either: every write that orders or changes a conversation or a mailbox
// carries the writer's ring epoch and, in the statement that takes the row lock, requires
// `owner_epoch <= epoch` and sets `owner_epoch = epoch`. A worker that lost the key (paused past its
// lease, or behind on the membership watch) therefore cannot commit once the new owner has written.
//
// Migration states (key-state.ts) are checked the same way: the statement that takes the row lock also
// requires `state = 'active'`, so a freeze (which takes the same lock) orders with sends and appends, and
// the hot path runs no extra statement. Only a refused write reads the row again to say why.
import { trimToPageBudget } from "./page-budget.ts";
import { and, eq, lte, sql, type SQL } from "drizzle-orm";
import { drizzle, type NodePgDatabase, type NodePgQueryResultHKT } from "drizzle-orm/node-postgres";
import type { PgDatabase } from "drizzle-orm/pg-core";
import type { Pool } from "pg";
import {
  decode,
  groupMembersMax,
  type ImportedConversation,
  type ImportedMailboxEvent,
  type ImportedMember,
  isRecord,
  joinedEventId,
  mailboxEvent as mailboxEventDecoder,
  message as messageDecoder,
  type ConversationSummary,
  type DirectoryEntryKind,
  type InventoryKey,
  type JoinedEvent,
  type Message,
  type SequencedEvent,
} from "@cellwire/protocol";
import {
  conversationMembers,
  conversations,
  mailboxEvents as mailboxEventsTable,
  messages as messagesTable,
  outbox as outboxTable,
  readPositions,
} from "./schema.ts";
import {
  frozenForNonMember,
  importRefusal,
  parseKeyState,
  placeholderConversationKind,
  readRefusal,
  writeRefusal,
  type KeyRow,
} from "./key-state.ts";
import { advancedPositions, positionsMoved, receiptEventOf, receiptRecipients } from "./receipt-positions.ts";
import { StoreRowError, postgresErrorCode, uniqueViolation } from "./errors.ts";
import { storeSends } from "./postgres-sends.ts";
import {
  placeholderCreatorUserId,
  sendKey,
  tombstoneBatchRowsDefault,
  type SendKey,
  type CellStoreStats,
  type ConversationExport,
  type EpochFenced,
  type ExportMailboxInput,
  type ExportMessagesInput,
  type FreezeInput,
  type FreezeResult,
  type FrozenKey,
  type ImportPageInput,
  type ImportPageResult,
  type KeyMigrationState,
  type MailboxPageResult,
  type MembersResult,
  type MessagesAfterInput,
  type MessagesAfterResult,
  type MigrationKey,
  type TombstoneInput,
  type TombstoneResult,
  type UnfreezeResult,
} from "./store.ts";
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
  MailboxPageInput,
  MarkReceiptInput,
  MarkReceiptResult,
  OpenDirectInput,
  DeadLetter,
  DeadLetterInput,
  OutboxAttempts,
  OutboxEntry,
  OutboxFailure,
  OutboxPage,
  OutboxQuery,
  OutboxRetry,
  RedriveSelection,
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
/**
 * Two owners of the same conversations during a handover can lock a batch's conversation rows in opposite
 * orders; Postgres aborts one of them (40P01) and the batch is simply run again, like a duplicate.
 */
const deadlockDetected = "40P01";

async function retryingUniqueViolation<T>(attempt: () => Promise<T>): Promise<T> {
  for (let count = 1; ; count++) {
    try {
      return await attempt();
    } catch (error) {
      const code = postgresErrorCode(error);
      if (count >= appendAttemptsMax || (code !== uniqueViolation && code !== deadlockDetected)) throw error;
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

  /**
   * `sendPool`: the connections the group commit's statement runs on (the worker gives it its own, set up
   * by sendSessionOptions); the main pool when absent.
   */
  constructor(
    private readonly pool: Pool,
    limits: Partial<StoreLimits> = {},
    private readonly sendPool: Pool = pool,
  ) {
    this.database = drizzle({ client: pool });
    this.limits = {
      groupMembersMax: Math.min(limits.groupMembersMax ?? groupMembersMax, groupMembersMax),
      tombstoneBatchRowsMax: limits.tombstoneBatchRowsMax ?? tombstoneBatchRowsDefault,
    };
  }

  async appendMessage(input: AppendMessageInput): Promise<AppendMessageResult> {
    const [result] = await this.appendMessages([input]);
    if (result === undefined) throw new StoreRowError("a batch of one send returned no result");
    return result;
  }

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

  async openDirect(input: OpenDirectInput): Promise<ConversationResult<"not_a_member" | "invalid_peer">> {
    if (input.userId === input.peerUserId) return { outcome: "invalid_peer" };
    return this.database.transaction(async (transaction) => {
      const claimed = await claimConversation(
        transaction,
        { id: input.conversationId, kind: "direct", title: null, createdByUserId: input.userId },
        input.epoch,
      );
      // A tombstone is a row too: the claim does not re-create a conversation that moved away.
      if (claimed === "refused") return (await this.conversationRefusal(input.conversationId, input.epoch, transaction)) ?? fenced;
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
      if (claimed === "refused") return (await this.conversationRefusal(input.conversationId, input.epoch, transaction)) ?? fenced;
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
        return (
          (await this.conversationRefusal(input.conversationId, input.epoch, transaction, input.userId)) ?? { outcome: "not_a_member" }
        );
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
        return (await this.conversationRefusal(conversationId, epoch, transaction, userId)) ?? { outcome: "not_a_member" };
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

  async appendMailbox(input: AppendMailboxInput): Promise<AppendMailboxResult> {
    return retryingUniqueViolation(() => this.appendMailboxOnce(input));
  }

  private async appendMailboxOnce(input: AppendMailboxInput): Promise<AppendMailboxResult> {
    const { userId, eventId, event, epoch } = input;
    // One statement, as for messages: the existing seq of (user, event) comes back, or the mailbox row is
    // created (with the epoch) or advanced if it was not written under a later epoch (its lock orders
    // concurrent appenders and the fence is re-checked under it) and the event inserted with the new seq.
    // No row at all means the fence or the mailbox's migration state refused. A concurrent duplicate
    // fails on the (user_id, event_id) unique key, rolling its increment back. A repeated event is a read:
    // answered while frozen, not while importing.
    const result = await this.database.execute(sql`
      with existing as (
        select seq from mailbox_events where user_id = ${userId}::text and event_id = ${eventId}::text
          and not exists (select 1 from mailboxes where user_id = ${userId}::text and state = 'importing')
      ),
      advanced as (
        insert into mailboxes (user_id, last_seq, owner_epoch)
        select ${userId}::text, 1, ${epoch}::bigint
        where not exists (select 1 from existing)
        on conflict (user_id) do update set last_seq = mailboxes.last_seq + 1, owner_epoch = excluded.owner_epoch
          where mailboxes.owner_epoch <= excluded.owner_epoch and mailboxes.state = 'active'
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
    if (row === undefined) return (await this.mailboxRefusal(userId, epoch)) ?? fenced;
    if (result.rows.length > 1) throw new StoreRowError(`mailbox append returned ${result.rows.length} rows`);
    const deduplicated = row["deduplicated"];
    if (typeof deduplicated !== "boolean") throw new StoreRowError("mailbox append row: deduplicated must be a boolean");
    return { outcome: "appended", seq: safeInteger(row["seq"], "mailbox_events.seq"), deduplicated };
  }

  async mailboxPage(input: MailboxPageInput): Promise<MailboxPageResult> {
    const { userId, afterSeq, limit } = input;
    // One statement, so the head and the events come from one snapshot. Always at least one row: the
    // user's (possibly missing) mailbox, with no event columns when the page is empty.
    const result = await this.database.execute(sql`
      select mailboxes.last_seq as head_seq, mailboxes.floor_seq, mailboxes.incarnation, page.seq, page.event,
             mailboxes.state, mailboxes.moving_to_cell_id, mailboxes.moved_epoch, mailboxes.owner_epoch
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
    if (first["state"] !== null) {
      const refusal = readRefusal(keyRowFromRecord(first));
      if (refusal !== undefined) return refusal;
    }
    const headSeq = first["head_seq"] === null ? 0 : safeInteger(first["head_seq"], "mailboxes.last_seq");
    const floorSeq = first["floor_seq"] === null ? 0 : safeInteger(first["floor_seq"], "mailboxes.floor_seq");
    const incarnation = incarnationOf(first);
    const events = result.rows.filter((row) => row["seq"] !== null).map(sequencedEventFromRow);
    return { outcome: "page", events: trimToPageBudget(events).kept, headSeq, floorSeq, incarnation };
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
    const conditions: SQL[] = [sql`o.id > ${query.afterId}::bigint`];
    if (query.conversationId !== undefined) conditions.push(sql`o.conversation_id = ${query.conversationId}::text`);
    if (query.olderThanMs > 0)
      conditions.push(sql`o.created_at <= now() - ${query.olderThanMs}::double precision * interval '1 millisecond'`);
    if (query.dueOnly === true) {
      // The row and every older row of its (conversation, recipient): one backing off holds the rest back.
      conditions.push(sql`not exists (
        select 1 from outbox waiting
        where waiting.conversation_id = o.conversation_id and waiting.recipient_user_id = o.recipient_user_id
          and waiting.id <= o.id and waiting.next_attempt_at > now()
      )`);
    }
    const result = await this.database.execute(sql`
      select o.id, o.conversation_id, o.recipient_user_id, o.event_id, o.event, o.attempts, o.next_attempt_at > now() as backing_off
      from outbox o
      where ${sql.join(conditions, sql` and `)}
      order by o.id
      limit ${query.limit}::integer
    `);
    const entries: OutboxEntry[] = [];
    const malformed: { id: number; reason: string }[] = [];
    const retried: OutboxRetry[] = [];
    let lastId: number | undefined;
    for (const row of result.rows) {
      const id = safeInteger(row["id"], "outbox.id");
      lastId = id;
      const entry = outboxEntryFromRow(id, row);
      if (typeof entry === "string") {
        malformed.push({ id, reason: entry });
        continue;
      }
      entries.push(entry);
      const attempts = safeInteger(row["attempts"], "outbox.attempts");
      if (attempts > 0) retried.push({ id, attempts, backingOff: row["backing_off"] === true });
    }
    return { entries, malformed, lastId, retried };
  }

  /**
   * Why a write that did nothing was refused: a tombstone, a later epoch or a migration in progress
   * (key-state.ts), or undefined when none of them (the caller's own refusal, such as not_a_member).
   * Epochs only grow, so reading after the statement cannot miss a fence that refused it (at worst a
   * refusal is reported as fenced, and the new owner answers it). States change only in the key's turn
   * of its owner's queue, so the owner's own writes see the state that refused them.
   */
  private async conversationRefusal(conversationId: string, epoch: number, executor: Executor = this.database, writerUserId?: string) {
    const row = await readKeyRow(executor, { kind: "conversation", id: conversationId });
    const refusal = writeRefusal(row, epoch);
    // A writer on behalf of a user (addMembers, markReceipt) who is not a member of a frozen conversation
    // is answered as for any conversation it is not in (key-state.ts, frozenForNonMember).
    if (writerUserId === undefined || refusal?.outcome !== "moving" || row?.state !== "frozen") return refusal;
    const isMember = (await readMembers(executor, conversationId)).includes(writerUserId);
    return frozenForNonMember(row, refusal, isMember) ? undefined : refusal;
  }

  private async mailboxRefusal(userId: string, epoch: number, executor: Executor = this.database) {
    return writeRefusal(await readKeyRow(executor, { kind: "user", id: userId }), epoch);
  }

  async migrationState(key: MigrationKey): Promise<KeyMigrationState | undefined> {
    const result = await this.database.execute(
      key.kind === "user"
        ? sql`select state, moving_to_cell_id, moved_epoch, owner_epoch, last_seq, floor_seq, false as placeholder, incarnation
              from mailboxes where user_id = ${key.id}::text`
        : sql`select state, moving_to_cell_id, moved_epoch, owner_epoch, last_seq, 0 as floor_seq, created_by_user_id = ${placeholderCreatorUserId}::text as placeholder,
                     null as incarnation
              from conversations where id = ${key.id}::text`,
    );
    const row = result.rows[0];
    if (row === undefined) return undefined;
    const { state, movingToCellId, movedEpoch } = keyRowFromRecord(row);
    return {
      state,
      movingToCellId,
      movedEpoch,
      lastSeq: safeInteger(row["last_seq"], "last_seq"),
      floorSeq: safeInteger(row["floor_seq"], "floor_seq"),
      placeholder: placeholderOf(row),
      incarnation: incarnationOf(row),
    };
  }

  async freeze(input: FreezeInput): Promise<FreezeResult> {
    const { id, toCellId, epoch } = input;
    // Takes the row lock (after any send or append holding it) and checks the fence, as a write does.
    const result = await this.database.execute(
      input.kind === "user"
        ? sql`
          insert into mailboxes (user_id, owner_epoch, state, moving_to_cell_id) values (${id}::text, ${epoch}::bigint, 'frozen', ${toCellId}::text)
          on conflict (user_id) do update set state = 'frozen', moving_to_cell_id = excluded.moving_to_cell_id, owner_epoch = excluded.owner_epoch
            where mailboxes.owner_epoch <= excluded.owner_epoch and mailboxes.state in ('active', 'frozen')
          returning last_seq, floor_seq, false as placeholder, incarnation`
        : sql`
          insert into conversations (id, kind, title, created_by_user_id, owner_epoch, state, moving_to_cell_id)
          values (${id}::text, ${placeholderConversationKind(id)}::text, null, ${placeholderCreatorUserId}::text, ${epoch}::bigint, 'frozen', ${toCellId}::text)
          on conflict (id) do update set state = 'frozen', moving_to_cell_id = excluded.moving_to_cell_id, owner_epoch = excluded.owner_epoch
            where conversations.owner_epoch <= excluded.owner_epoch and conversations.state in ('active', 'frozen')
          returning last_seq, 0 as floor_seq, created_by_user_id = ${placeholderCreatorUserId}::text as placeholder, null as incarnation`,
    );
    const row = result.rows[0];
    if (row !== undefined) {
      return {
        outcome: "frozen",
        lastSeq: safeInteger(row["last_seq"], "last_seq"),
        floorSeq: safeInteger(row["floor_seq"], "floor_seq"),
        placeholder: placeholderOf(row),
        incarnation: incarnationOf(row),
      };
    }
    // The insert or update was refused, so the row exists: it says why.
    return writeRefusal(await readKeyRow(this.database, input), epoch) ?? fenced;
  }

  async unfreeze(input: EpochFenced & MigrationKey): Promise<UnfreezeResult> {
    const { id, epoch } = input;
    if (input.kind === "conversation") {
      // A placeholder goes: the key is back to having no row. It has no members or messages to hold it.
      const deleted = await this.database.execute(sql`
        delete from conversations
        where id = ${id}::text and created_by_user_id = ${placeholderCreatorUserId}::text and state = 'frozen' and owner_epoch <= ${epoch}::bigint
        returning 1 as deleted
      `);
      if (deleted.rows.length > 0) return { outcome: "active" };
    }
    const table = sql.raw(input.kind === "user" ? "mailboxes" : "conversations");
    const keyColumn = sql.raw(input.kind === "user" ? "user_id" : "id");
    const result = await this.database.execute(sql`
      update ${table} set state = 'active', moving_to_cell_id = null, owner_epoch = ${epoch}::bigint
      where ${keyColumn} = ${id}::text and owner_epoch <= ${epoch}::bigint and state in ('active', 'frozen')
      returning 1 as unfrozen
    `);
    if (result.rows.length > 0) return { outcome: "active" };
    const current = await readKeyRow(this.database, input);
    if (current === undefined) return { outcome: "not_found" };
    return writeRefusal(current, epoch) ?? fenced;
  }

  async frozenKeys(limit: number, after?: MigrationKey): Promise<FrozenKey[]> {
    // Each branch reads its partial index of frozen rows (schema.ts), not the table. The cursor skips the
    // conversations when it is past them (a user), and starts each branch after its id in its own kind.
    const afterKind = after?.kind ?? null;
    const afterId = after?.id ?? "";
    const result = await this.database.execute(sql`
      select kind, id, moving_to_cell_id from (
        (select 0 as kind_order, 'conversation' as kind, id collate "C" as id, moving_to_cell_id from conversations
         where state = 'frozen'
           and (${afterKind}::text is null or (${afterKind}::text = 'conversation' and id collate "C" > ${afterId}::text collate "C"))
         order by id collate "C" limit ${limit}::integer)
        union all
        (select 1 as kind_order, 'user' as kind, user_id collate "C" as id, moving_to_cell_id from mailboxes
         where state = 'frozen'
           and (${afterKind}::text is distinct from 'user' or user_id collate "C" > ${afterId}::text collate "C")
         order by user_id collate "C" limit ${limit}::integer)
      ) frozen
      order by kind_order, id
      limit ${limit}::integer
    `);
    return result.rows.map((row): FrozenKey => {
      const { kind, id, moving_to_cell_id: movingToCellId } = row;
      if (
        (kind !== "conversation" && kind !== "user") ||
        typeof id !== "string" ||
        (movingToCellId !== null && typeof movingToCellId !== "string")
      ) {
        throw new StoreRowError("frozen key row: kind, id and moving_to_cell_id do not have their types");
      }
      return { kind, id, movingToCellId };
    });
  }

  async inventory(kind: DirectoryEntryKind, afterId: string, limit: number): Promise<InventoryKey[]> {
    // The primary keys' indexes walk in id order; `collate "C"` makes that order bytewise, as the cursor is.
    const result = await this.database.execute(
      kind === "user"
        ? sql`select user_id as id, state, moving_to_cell_id, moved_epoch from mailboxes
              where user_id collate "C" > ${afterId}::text collate "C" order by user_id collate "C" limit ${limit}::integer`
        : sql`select id, state, moving_to_cell_id, moved_epoch from conversations
              where id collate "C" > ${afterId}::text collate "C" order by id collate "C" limit ${limit}::integer`,
    );
    return result.rows.map((row): InventoryKey => {
      const { id, moving_to_cell_id: movingToCellId, moved_epoch: movedEpoch } = row;
      if (typeof id !== "string" || (movingToCellId !== null && typeof movingToCellId !== "string")) {
        throw new StoreRowError("inventory row: id and moving_to_cell_id do not have their types");
      }
      return {
        id,
        state: parseKeyState(row["state"]),
        movingToCellId,
        movedEpoch: movedEpoch === null ? null : safeInteger(movedEpoch, "moved_epoch"),
      };
    });
  }

  async exportMailbox(input: ExportMailboxInput): Promise<ImportedMailboxEvent[]> {
    const result = await this.database.execute(sql`
      select seq, event_id, event from mailbox_events
      where user_id = ${input.userId}::text and seq > ${input.afterSeq}::bigint
      order by seq
      limit ${input.limit}::integer
    `);
    const events = result.rows.map((row): ImportedMailboxEvent => {
      const { seq, event } = sequencedEventFromRow(row);
      const eventId = row["event_id"];
      if (typeof eventId !== "string") throw new StoreRowError("mailbox_events.event_id must be a string");
      return { seq, eventId, event };
    });
    return trimToPageBudget(events).kept;
  }

  async exportConversation(conversationId: string): Promise<ConversationExport | undefined> {
    const found = await this.database.execute(sql`
      select kind, title, created_by_user_id, floor(extract(epoch from created_at) * 1000)::bigint as created_at_ms
      from conversations where id = ${conversationId}::text and created_by_user_id <> ${placeholderCreatorUserId}::text
    `);
    const row = found.rows[0];
    if (row === undefined) return undefined;
    const kind = row["kind"];
    const title = row["title"];
    const createdByUserId = row["created_by_user_id"];
    if ((kind !== "direct" && kind !== "group") || (title !== null && typeof title !== "string") || typeof createdByUserId !== "string") {
      throw new StoreRowError("conversation row: kind, title and created_by_user_id do not have their types");
    }
    const conversation: ImportedConversation = {
      kind,
      title,
      createdByUserId,
      createdAtMs: safeInteger(row["created_at_ms"], "conversations.created_at"),
    };
    const memberRows = await this.database.execute(sql`
      select members.user_id, floor(extract(epoch from members.joined_at) * 1000)::bigint as joined_at_ms, members.joined_after_seq,
             coalesce(positions.read_seq, 0) as read_seq, coalesce(positions.delivered_seq, 0) as delivered_seq
      from conversation_members members
      left join read_positions positions on positions.conversation_id = members.conversation_id and positions.user_id = members.user_id
      where members.conversation_id = ${conversationId}::text
      order by members.user_id collate "C"
    `);
    const members = memberRows.rows.map((member): ImportedMember => {
      const userId = member["user_id"];
      if (typeof userId !== "string") throw new StoreRowError("conversation_members.user_id must be a string");
      return {
        userId,
        joinedAtMs: safeInteger(member["joined_at_ms"], "conversation_members.joined_at"),
        joinedAfterSeq: safeInteger(member["joined_after_seq"], "conversation_members.joined_after_seq"),
        readSeq: safeInteger(member["read_seq"], "read_positions.read_seq"),
        deliveredSeq: safeInteger(member["delivered_seq"], "read_positions.delivered_seq"),
      };
    });
    return { conversation, members };
  }

  async exportMessages(input: ExportMessagesInput): Promise<Message[]> {
    const result = await this.database.execute(sql`
      select ${messageColumns} from messages
      where conversation_id = ${input.conversationId}::text and seq > ${input.afterSeq}::bigint
      order by seq
      limit ${input.limit}::integer
    `);
    return trimToPageBudget(result.rows.map(messageFromRow)).kept;
  }

  async importPage(input: ImportPageInput): Promise<ImportPageResult> {
    const { id } = input;
    return this.database.transaction(async (transaction) => {
      const claimed = input.first ? await resetForImport(transaction, input) : await lockImporting(transaction, input);
      if (!claimed) return importRefusal(await readKeyRow(transaction, input), input.epoch, input.first);
      if (input.kind === "user") {
        if (input.events.length > 0) {
          await transaction
            .insert(mailboxEventsTable)
            .values(input.events.map((entry) => ({ userId: id, seq: entry.seq, eventId: entry.eventId, event: entry.event })))
            .onConflictDoNothing();
        }
        if (!input.last) return { outcome: "importing" };
        // Without an incarnation (a worker before docs/decisions/0021 sent the page) the copy keeps its own.
        await transaction.execute(sql`
          update mailboxes set state = 'active', last_seq = ${input.lastSeq}::bigint, floor_seq = ${input.floorSeq}::bigint,
            incarnation = coalesce(${input.incarnation ?? null}::uuid, incarnation)
          where user_id = ${id}::text
        `);
        return { outcome: "active" };
      }
      if (input.members.length > 0) {
        await transaction
          .insert(conversationMembers)
          .values(
            input.members.map((member) => ({
              conversationId: id,
              userId: member.userId,
              joinedAt: new Date(member.joinedAtMs),
              joinedAfterSeq: member.joinedAfterSeq,
            })),
          )
          .onConflictDoNothing();
        const positioned = input.members.filter((member) => member.readSeq > 0 || member.deliveredSeq > 0);
        if (positioned.length > 0) {
          await transaction
            .insert(readPositions)
            .values(
              positioned.map((member) => ({
                conversationId: id,
                userId: member.userId,
                readSeq: member.readSeq,
                deliveredSeq: member.deliveredSeq,
              })),
            )
            // Members come again after the freeze (the copy before it ran while receipts still moved): positions only grow.
            .onConflictDoUpdate({
              target: [readPositions.conversationId, readPositions.userId],
              set: {
                readSeq: sql`greatest(${readPositions.readSeq}, excluded.read_seq)`,
                deliveredSeq: sql`greatest(${readPositions.deliveredSeq}, excluded.delivered_seq)`,
              },
            });
        }
      }
      if (input.messages.length > 0) {
        await transaction
          .insert(messagesTable)
          .values(
            input.messages.map((message) => ({
              conversationId: id,
              seq: message.seq,
              messageId: message.messageId,
              senderUserId: message.senderUserId,
              senderDeviceId: message.senderDeviceId,
              clientMessageId: message.clientMessageId,
              body: message.body,
              sentAt: new Date(message.sentAtMs),
            })),
          )
          .onConflictDoNothing();
      }
      if (input.outbox.length > 0) {
        // New ids here; the new home's sweeper relays them (appends are idempotent by event id).
        await transaction
          .insert(outboxTable)
          .values(
            input.outbox.map((entry) => ({
              conversationId: id,
              recipientUserId: entry.recipientUserId,
              eventId: entry.eventId,
              event: entry.event,
            })),
          )
          .onConflictDoNothing();
      }
      if (!input.last) return { outcome: "importing" };
      // Members may have been added while the key lived in another cell, and this row kept the version it
      // had before it left (resetForImport leaves it): a member list a worker here cached back then must
      // read as stale, so the activation raises it (see AppendMessageResult's membersVersion).
      await transaction.execute(sql`
        update conversations set state = 'active', last_seq = ${input.lastSeq}::bigint, members_version = members_version + 1
        where id = ${id}::text
      `);
      return { outcome: "active" };
    });
  }

  async tombstone(input: TombstoneInput): Promise<TombstoneResult> {
    const { id, toCellId, movedEpoch, epoch } = input;
    // First the state (every request answers moved from this commit on, so nothing is written any more),
    // then the rows, in batches, each its own short statement.
    const result = await this.database.execute(
      input.kind === "user"
        ? sql`
          insert into mailboxes (user_id, owner_epoch, state, moving_to_cell_id, moved_epoch)
          values (${id}::text, ${epoch}::bigint, 'moved', ${toCellId}::text, ${movedEpoch}::bigint)
          on conflict (user_id) do update set state = 'moved', moving_to_cell_id = excluded.moving_to_cell_id,
            moved_epoch = excluded.moved_epoch, owner_epoch = excluded.owner_epoch
            where mailboxes.owner_epoch <= excluded.owner_epoch and mailboxes.state <> 'importing'
          returning 1 as moved`
        : sql`
          update conversations set state = 'moved', moving_to_cell_id = ${toCellId}::text, moved_epoch = ${movedEpoch}::bigint,
            owner_epoch = ${epoch}::bigint
          where id = ${id}::text and owner_epoch <= ${epoch}::bigint and state <> 'importing'
          returning 1 as moved`,
    );
    if (result.rows.length === 0) {
      const current = await readKeyRow(this.database, input);
      if (current === undefined) return { outcome: "not_found" };
      return current.ownerEpoch > epoch ? fenced : { outcome: "moving" };
    }
    const tables: readonly (readonly [string, string])[] =
      input.kind === "user"
        ? [["mailbox_events", "user_id"]]
        : [
            ["outbox", "conversation_id"],
            ["read_positions", "conversation_id"],
            ["messages", "conversation_id"],
            ["conversation_members", "conversation_id"],
          ];
    const batchRowsMax = this.limits.tombstoneBatchRowsMax;
    let deletedRows = 0;
    for (const [table, column] of tables) {
      for (;;) {
        const deleted = await this.database.execute(sql`
          delete from ${sql.raw(table)} where ctid = any(array(
            select ctid from ${sql.raw(table)} where ${sql.raw(column)} = ${id}::text limit ${batchRowsMax}::integer
          ))
        `);
        const count = deleted.rowCount ?? 0;
        deletedRows += count;
        if (count < batchRowsMax) break;
      }
    }
    return { outcome: "moved", deletedRows };
  }

  async stats(): Promise<CellStoreStats> {
    const result = await this.database.execute(sql`
      select (select count(*) from mailboxes where state = 'active') as users,
             (select count(*) from conversations where state = 'active') as conversations,
             (select count(*) from outbox) as outbox_rows,
             (select count(*) from mailboxes where state = 'frozen') + (select count(*) from conversations where state = 'frozen') as frozen
    `);
    const row = result.rows[0];
    if (row === undefined) throw new StoreRowError("stats returned no row");
    return {
      users: safeInteger(row["users"], "users"),
      conversations: safeInteger(row["conversations"], "conversations"),
      outboxRows: safeInteger(row["outbox_rows"], "outbox_rows"),
      frozen: safeInteger(row["frozen"], "frozen"),
    };
  }

  async deleteOutbox(ids: readonly number[]): Promise<void> {
    if (ids.length === 0) return;
    await this.database.execute(sql`delete from outbox where id = any(${idArray(ids)}::bigint[])`);
  }

  async markOutboxAttempt(failures: readonly OutboxFailure[]): Promise<OutboxAttempts[]> {
    if (failures.length === 0) return [];
    // One statement for every failure of a relay; the rows travel as one JSON parameter.
    const rows = failures.map(({ id, retryAfterMs, error }) => ({ id: checkedId(id), retry_after_ms: retryAfterMs, last_error: error }));
    const result = await this.database.execute(sql`
      update outbox o set attempts = o.attempts + 1, last_error = f.last_error,
        next_attempt_at = now() + f.retry_after_ms * interval '1 millisecond'
      from jsonb_to_recordset(${JSON.stringify(rows)}::jsonb) as f(id bigint, retry_after_ms double precision, last_error text)
      where o.id = f.id
      returning o.id, o.attempts
    `);
    return result.rows.map((row) => ({
      id: safeInteger(row["id"], "outbox.id"),
      attempts: safeInteger(row["attempts"], "outbox.attempts"),
    }));
  }

  async deadLetterOutbox(input: DeadLetterInput): Promise<number> {
    const result = await this.database.execute(sql`
      with moved as (
        delete from outbox where conversation_id = ${input.conversationId}::text and recipient_user_id = ${input.recipientUserId}::text
        returning id, conversation_id, recipient_user_id, event_id, event, created_at, attempts, last_error
      )
      insert into dead_letters (id, conversation_id, recipient_user_id, event_id, event, created_at, attempts, last_error)
      select id, conversation_id, recipient_user_id, event_id, event, created_at, attempts, coalesce(last_error, ${input.reason}::text) from moved
      on conflict (id) do update set attempts = excluded.attempts, last_error = excluded.last_error, dead_lettered_at = now()
      returning id
    `);
    return result.rows.length;
  }

  async deadLetteredRecipients(conversationId: string): Promise<string[]> {
    const result = await this.database.execute(sql`
      select distinct recipient_user_id from dead_letters where conversation_id = ${conversationId}::text order by recipient_user_id
    `);
    return result.rows.map((row) => {
      const recipient = row["recipient_user_id"];
      if (typeof recipient !== "string") throw new StoreRowError("dead_letters.recipient_user_id is not a string");
      return recipient;
    });
  }

  async deadLetters(query: { readonly afterId: number; readonly limit: number }): Promise<DeadLetter[]> {
    const result = await this.database.execute(sql`
      select id, conversation_id, recipient_user_id, event_id, attempts, last_error,
        floor(extract(epoch from created_at) * 1000)::bigint as created_at_ms,
        floor(extract(epoch from dead_lettered_at) * 1000)::bigint as dead_lettered_at_ms
      from dead_letters where id > ${query.afterId}::bigint order by id limit ${query.limit}::integer
    `);
    return result.rows.map((row): DeadLetter => {
      const { conversation_id: conversationId, recipient_user_id: recipientUserId, event_id: eventId, last_error: lastError } = row;
      if (
        typeof conversationId !== "string" ||
        typeof recipientUserId !== "string" ||
        typeof eventId !== "string" ||
        typeof lastError !== "string"
      ) {
        throw new StoreRowError("dead_letters: conversation_id, recipient_user_id, event_id and last_error must be strings");
      }
      return {
        id: safeInteger(row["id"], "dead_letters.id"),
        conversationId,
        recipientUserId,
        eventId,
        attempts: safeInteger(row["attempts"], "dead_letters.attempts"),
        lastError,
        createdAtMs: safeInteger(row["created_at_ms"], "dead_letters.created_at"),
        deadLetteredAtMs: safeInteger(row["dead_lettered_at_ms"], "dead_letters.dead_lettered_at"),
      };
    });
  }

  async redriveDeadLetters(selection: RedriveSelection): Promise<number[]> {
    const selected =
      "ids" in selection
        ? sql`select conversation_id, recipient_user_id from dead_letters where id = any(${idArray(selection.ids)}::bigint[])`
        : "conversationId" in selection
          ? sql`select conversation_id, recipient_user_id from dead_letters where conversation_id = ${selection.conversationId}::text`
          : sql`select conversation_id, recipient_user_id from (select conversation_id, recipient_user_id from dead_letters order by id limit ${selection.limit}::integer) first_rows`;
    const result = await this.database.execute(sql`
      with pairs as (${selected}),
      moved as (
        delete from dead_letters d using (select distinct conversation_id, recipient_user_id from pairs) p
        where d.conversation_id = p.conversation_id and d.recipient_user_id = p.recipient_user_id
        returning d.id, d.conversation_id, d.recipient_user_id, d.event_id, d.event, d.created_at
      )
      insert into outbox (id, conversation_id, recipient_user_id, event_id, event, created_at, attempts, next_attempt_at)
      select id, conversation_id, recipient_user_id, event_id, event, created_at, 0, now() from moved
      on conflict do nothing
      returning id
    `);
    return result.rows.map((row) => safeInteger(row["id"], "outbox.id")).sort((left, right) => left - right);
  }
}

function checkedId(id: number): number {
  if (!Number.isSafeInteger(id)) throw new RangeError(`outbox id ${String(id)} is not a safe integer`);
  return id;
}

/** A Postgres array literal of ids; each is checked to be a safe integer, so nothing else can get in. */
function idArray(ids: readonly number[]): string {
  return `{${ids.map(checkedId).join(",")}}`;
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

/** The key's row as the refusal rules read it, or undefined when there is none. */
async function readKeyRow(executor: Executor, key: MigrationKey): Promise<KeyRow | undefined> {
  const result = await executor.execute(
    key.kind === "user"
      ? sql`select state, moving_to_cell_id, moved_epoch, owner_epoch from mailboxes where user_id = ${key.id}::text`
      : sql`select state, moving_to_cell_id, moved_epoch, owner_epoch from conversations where id = ${key.id}::text`,
  );
  const row = result.rows[0];
  return row === undefined ? undefined : keyRowFromRecord(row);
}

function placeholderOf(row: Record<string, unknown>): boolean {
  const placeholder = row["placeholder"];
  if (typeof placeholder !== "boolean") throw new StoreRowError("placeholder must be a boolean");
  return placeholder;
}

/** A mailbox row's incarnation (a uuid, which node-postgres reads as text); null for no row or a conversation. */
function incarnationOf(row: Record<string, unknown>): string | null {
  const incarnation = row["incarnation"];
  if (incarnation !== null && typeof incarnation !== "string") throw new StoreRowError("mailboxes.incarnation must be text or null");
  return incarnation;
}

function keyRowFromRecord(row: Record<string, unknown>): KeyRow {
  const movingToCellId = row["moving_to_cell_id"];
  if (movingToCellId !== null && typeof movingToCellId !== "string") throw new StoreRowError("moving_to_cell_id must be text or null");
  return {
    state: parseKeyState(row["state"]),
    ownerEpoch: safeInteger(row["owner_epoch"], "owner_epoch"),
    movingToCellId,
    movedEpoch: row["moved_epoch"] === null ? null : safeInteger(row["moved_epoch"], "moved_epoch"),
  };
}

/**
 * The first page's claim: makes the key `importing` (inserting its row, or replacing a tombstone or an
 * earlier attempt's copy, fenced) and deletes the rows that copy left. False when the key is active or
 * frozen here, or written under a later epoch.
 */
async function resetForImport(executor: Executor, input: ImportPageInput): Promise<boolean> {
  const { id, epoch } = input;
  if (input.kind === "user") {
    const claimed = await executor.execute(sql`
      insert into mailboxes (user_id, last_seq, floor_seq, owner_epoch, state)
      values (${id}::text, ${input.floorSeq}::bigint, ${input.floorSeq}::bigint, ${epoch}::bigint, 'importing')
      on conflict (user_id) do update set last_seq = excluded.last_seq, floor_seq = excluded.floor_seq, owner_epoch = excluded.owner_epoch,
        state = 'importing', moving_to_cell_id = null, moved_epoch = null
        where mailboxes.owner_epoch <= excluded.owner_epoch and mailboxes.state in ('moved', 'importing')
      returning 1 as claimed
    `);
    if (claimed.rows.length === 0) return false;
    await executor.execute(sql`delete from mailbox_events where user_id = ${id}::text`);
    return true;
  }
  const { conversation } = input;
  // The request handler refuses a first conversation page without its description.
  if (conversation === null) throw new RangeError(`the first import page of ${id} has no conversation`);
  const claimed = await executor.execute(sql`
    insert into conversations (id, kind, title, created_by_user_id, created_at, last_seq, owner_epoch, state)
    values (${id}::text, ${conversation.kind}::text, ${conversation.title}::text, ${conversation.createdByUserId}::text,
            to_timestamp(${conversation.createdAtMs}::double precision / 1000), 0, ${epoch}::bigint, 'importing')
    on conflict (id) do update set kind = excluded.kind, title = excluded.title, created_by_user_id = excluded.created_by_user_id,
      created_at = excluded.created_at, last_seq = 0, owner_epoch = excluded.owner_epoch, state = 'importing',
      moving_to_cell_id = null, moved_epoch = null
      where conversations.owner_epoch <= excluded.owner_epoch and conversations.state in ('moved', 'importing')
    returning 1 as claimed
  `);
  if (claimed.rows.length === 0) return false;
  for (const table of ["outbox", "read_positions", "messages", "conversation_members"]) {
    await executor.execute(sql`delete from ${sql.raw(table)} where conversation_id = ${id}::text`);
  }
  return true;
}

/** A later page's claim: locks the importing row and checks the fence. */
async function lockImporting(executor: Executor, input: ImportPageInput): Promise<boolean> {
  const table = sql.raw(input.kind === "user" ? "mailboxes" : "conversations");
  const keyColumn = sql.raw(input.kind === "user" ? "user_id" : "id");
  const locked = await executor.execute(sql`
    update ${table} set owner_epoch = ${input.epoch}::bigint
    where ${keyColumn} = ${input.id}::text and owner_epoch <= ${input.epoch}::bigint and state = 'importing'
    returning 1 as locked
  `);
  return locked.rows.length > 0;
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
  const number =
    typeof value === "number" ? value : typeof value === "string" && /^-?[0-9]{1,20}$/.test(value) ? Number(value) : Number.NaN;
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
