// What the parts of the Postgres store share (postgres-store.ts composes them): the row decoders, the
// key-row reads a refused write runs to say why, and the retry of an append that met a concurrent duplicate.
import { eq, sql, type SQL } from "drizzle-orm";
import { type NodePgQueryResultHKT } from "drizzle-orm/node-postgres";
import { PgDialect, type PgDatabase } from "drizzle-orm/pg-core";
import type { Pool } from "pg";
import {
  decode,
  isRecord,
  mailboxEvent as mailboxEventDecoder,
  message as messageDecoder,
  type Message,
  type SequencedEvent,
} from "@cellwire/protocol";
import { conversationMembers } from "./schema.ts";
import { frozenForNonMember, parseKeyState, writeRefusal, type KeyRow } from "./key-state.ts";
import { StoreRowError, postgresErrorCode, uniqueViolation } from "./errors.ts";
import { type MigrationKey } from "./store.ts";

export const fenced = { outcome: "fenced" } as const;

/** Renders drizzle's sql`` templates to text and parameters ($1, $2, … in order of interpolation). */
const dialect = new PgDialect();

/**
 * Runs one statement written as a drizzle sql`` template as a NAMED statement on `pool`: Postgres parses
 * it once per connection and, once its plans settle, plans it once too. drizzle's execute() sends every
 * statement unnamed, parsed and planned at each call. Used for the mailbox page every connect reads: 0.14
 * ms of planning for 0.016 ms of execution (pg_stat_statements on the private Postgres of
 * docs/performance.md). Not applied wholesale: the conversation page, members and mailbox append run
 * this way made 1:1 p99 at 3,200 sends/s worse in each of six interleaved pairs, for reasons not
 * found yet (docs/performance.md, "Tried"). `name` must belong to this one statement: node-postgres
 * refuses a name prepared with another text on the same connection. The statement's text is the same at
 * every call (parameters are numbered by position, not by value), and it returns no timestamp, so pg's
 * own type parsers read the row as drizzle's would.
 */
export async function executePrepared(pool: Pool, name: string, statement: SQL): Promise<Record<string, unknown>[]> {
  const { sql: text, params } = dialect.sqlToQuery(statement);
  const result = await pool.query<Record<string, unknown>>({ name, text, values: params });
  return result.rows;
}

/** The database or a transaction on it: both run the same queries. */
export type Executor = PgDatabase<NodePgQueryResultHKT>;

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

export async function retryingUniqueViolation<T>(attempt: () => Promise<T>): Promise<T> {
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
export const messageColumns = sql.raw(
  `conversation_id, seq, message_id, sender_user_id, sender_device_id, client_message_id, body,
   floor(extract(epoch from sent_at) * 1000)::bigint as sent_at_ms`,
);

/** pg returns bigint columns as strings (a JavaScript number cannot hold every int8); convert only safe ones. */
export function safeInteger(value: unknown, column: string): number {
  const number =
    typeof value === "number" ? value : typeof value === "string" && /^-?[0-9]{1,20}$/.test(value) ? Number(value) : Number.NaN;
  if (!Number.isSafeInteger(number)) throw new StoreRowError(`${column} is not a safe integer: ${String(value).slice(0, 40)}`);
  return number;
}

export function messageFromRow(row: unknown): Message {
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

export function keyRowFromRecord(row: Record<string, unknown>): KeyRow {
  const movingToCellId = row["moving_to_cell_id"];
  if (movingToCellId !== null && typeof movingToCellId !== "string") throw new StoreRowError("moving_to_cell_id must be text or null");
  return {
    state: parseKeyState(row["state"]),
    ownerEpoch: safeInteger(row["owner_epoch"], "owner_epoch"),
    movingToCellId,
    movedEpoch: row["moved_epoch"] === null ? null : safeInteger(row["moved_epoch"], "moved_epoch"),
  };
}

export function placeholderOf(row: Record<string, unknown>): boolean {
  const placeholder = row["placeholder"];
  if (typeof placeholder !== "boolean") throw new StoreRowError("placeholder must be a boolean");
  return placeholder;
}

/** A mailbox row's incarnation (a uuid, which node-postgres reads as text); null for no row or a conversation. */
export function incarnationOf(row: Record<string, unknown>): string | null {
  const incarnation = row["incarnation"];
  if (incarnation !== null && typeof incarnation !== "string") throw new StoreRowError("mailboxes.incarnation must be text or null");
  return incarnation;
}

export function sequencedEventFromRow(row: Record<string, unknown>): SequencedEvent {
  const seq = safeInteger(row["seq"], "mailbox_events.seq");
  // jsonb comes back parsed, but what it holds is still checked: the protocol decoder decides.
  const event = decode(mailboxEventDecoder, row["event"]);
  if (!event.ok) throw new StoreRowError(`mailbox event ${seq}: ${event.failure.path} ${event.failure.reason}`);
  return { seq, event: event.value };
}

/** The key's row as the refusal rules read it, or undefined when there is none. */
export async function readKeyRow(executor: Executor, key: MigrationKey): Promise<KeyRow | undefined> {
  const result = await executor.execute(
    key.kind === "user"
      ? sql`select state, moving_to_cell_id, moved_epoch, owner_epoch from mailboxes where user_id = ${key.id}::text`
      : sql`select state, moving_to_cell_id, moved_epoch, owner_epoch from conversations where id = ${key.id}::text`,
  );
  const row = result.rows[0];
  return row === undefined ? undefined : keyRowFromRecord(row);
}

export async function readMembers(executor: Executor, conversationId: string): Promise<string[]> {
  const rows = await executor
    .select({ userId: conversationMembers.userId })
    .from(conversationMembers)
    .where(eq(conversationMembers.conversationId, conversationId))
    // Byte order, so the list sorts the same as JavaScript's default sort whatever the database collation.
    .orderBy(sql`${conversationMembers.userId} collate "C"`);
  return rows.map((row) => row.userId);
}

/**
 * Why a write that did nothing was refused: a tombstone, a later epoch or a migration in progress
 * (key-state.ts), or undefined when none of them (the caller's own refusal, such as not_a_member).
 * Epochs only grow, so reading after the statement cannot miss a fence that refused it (at worst a
 * refusal is reported as fenced, and the new owner answers it). States change only in the key's turn
 * of its owner's queue, so the owner's own writes see the state that refused them.
 */
export async function conversationRefusal(executor: Executor, conversationId: string, epoch: number, writerUserId?: string) {
  const row = await readKeyRow(executor, { kind: "conversation", id: conversationId });
  const refusal = writeRefusal(row, epoch);
  // A writer on behalf of a user (addMembers, markReceipt) who is not a member of a frozen conversation
  // is answered as for any conversation it is not in (key-state.ts, frozenForNonMember).
  if (writerUserId === undefined || refusal?.outcome !== "moving" || row?.state !== "frozen") return refusal;
  const isMember = (await readMembers(executor, conversationId)).includes(writerUserId);
  return frozenForNonMember(row, refusal, isMember) ? undefined : refusal;
}

/** conversationRefusal for a mailbox. */
export async function mailboxRefusal(executor: Executor, userId: string, epoch: number) {
  return writeRefusal(await readKeyRow(executor, { kind: "user", id: userId }), epoch);
}
