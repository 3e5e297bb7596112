// A key's live migration in Postgres (docs/decisions/0008): its state, freezing, the export and import of
// its pages, its tombstone, and the inventory and stats read from the same rows.
import type { NodePgDatabase } from "drizzle-orm/node-postgres";
import { trimToPageBudget } from "./page-budget.ts";
import { sql } from "drizzle-orm";
import {
  type ImportedConversation,
  type ImportedMailboxEvent,
  type ImportedMember,
  type DirectoryEntryKind,
  type InventoryKey,
  type Message,
} from "@cellwire/protocol";
import {
  conversationMembers,
  mailboxEvents as mailboxEventsTable,
  messages as messagesTable,
  outbox as outboxTable,
  readPositions,
} from "./schema.ts";
import { importRefusal, parseKeyState, placeholderConversationKind, writeRefusal } from "./key-state.ts";
import { StoreRowError } from "./errors.ts";
import {
  placeholderCreatorUserId,
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
  type MigrationKey,
  type TombstoneInput,
  type TombstoneResult,
  type UnfreezeResult,
} from "./store.ts";
import type { MigrationStore, StoreLimits } from "./store.ts";
import {
  fenced,
  messageColumns,
  safeInteger,
  messageFromRow,
  keyRowFromRecord,
  placeholderOf,
  incarnationOf,
  sequencedEventFromRow,
  readKeyRow,
  type Executor,
} from "./postgres-rows.ts";

/** The MigrationStore on a cell's Postgres database. */
export class PostgresMigration implements MigrationStore {
  constructor(
    private readonly database: NodePgDatabase,
    private readonly limits: StoreLimits,
  ) {}

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
    return this.database.transaction(async (transaction) => {
      const claimed = input.first ? await resetForImport(transaction, input) : await lockImporting(transaction, input);
      if (!claimed) return importRefusal(await readKeyRow(transaction, input), input.epoch, input.first);
      return input.kind === "user" ? importMailboxPage(transaction, input) : importConversationPage(transaction, input);
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

/** A mailbox's import page, its key claimed: its events, and on the last page the heads and the activation. */
async function importMailboxPage(transaction: Executor, input: ImportPageInput & { readonly kind: "user" }): Promise<ImportPageResult> {
  const { id } = input;
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

/** A conversation's import page, its key claimed: members, messages, outbox rows, and on the last page the activation. */
async function importConversationPage(
  transaction: Executor,
  input: ImportPageInput & { readonly kind: "conversation" },
): Promise<ImportPageResult> {
  const { id } = input;
  await importMembers(transaction, id, input.members);
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
}

/** Member rows with their join points, and the positions of those who have any. */
async function importMembers(transaction: Executor, id: string, members: readonly ImportedMember[]): Promise<void> {
  if (members.length === 0) return;
  await transaction
    .insert(conversationMembers)
    .values(
      members.map((member) => ({
        conversationId: id,
        userId: member.userId,
        joinedAt: new Date(member.joinedAtMs),
        joinedAfterSeq: member.joinedAfterSeq,
      })),
    )
    .onConflictDoNothing();
  const positioned = members.filter((member) => member.readSeq > 0 || member.deliveredSeq > 0);
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
