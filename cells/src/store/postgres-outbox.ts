// The outbox and its dead letters in Postgres: the relay's pages, its failures, and the moves between
// the two tables (docs/decisions/0009).
import type { NodePgDatabase } from "drizzle-orm/node-postgres";
import { sql, type SQL } from "drizzle-orm";
import { decode, mailboxEvent as mailboxEventDecoder } from "@cellwire/protocol";
import { StoreRowError } from "./errors.ts";
import type {
  DeadLetter,
  DeadLetterInput,
  OutboxAttempts,
  OutboxEntry,
  OutboxFailure,
  OutboxPage,
  OutboxQuery,
  OutboxRetry,
  RedriveSelection,
} from "./store.ts";
import { safeInteger } from "./postgres-rows.ts";

/** The ConversationStore operations on the outbox and dead letters. */
export class PostgresOutbox {
  constructor(private readonly database: NodePgDatabase) {}

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
