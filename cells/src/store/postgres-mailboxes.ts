// Users' mailboxes in Postgres: the gapless per-user seq comes from the mailbox row's lock, as a
// conversation's does (postgres-store.ts).
import type { NodePgDatabase } from "drizzle-orm/node-postgres";
import type { Pool } from "pg";
import { trimToPageBudget } from "./page-budget.ts";
import { sql } from "drizzle-orm";
import { readRefusal } from "./key-state.ts";
import { StoreRowError } from "./errors.ts";
import { TurnBatch, type Settled } from "@cellwire/cluster";
import { type MailboxPageResult } from "./store.ts";
import type { AppendMailboxInput, AppendMailboxResult, MailboxPageInput } from "./store.ts";
import {
  fenced,
  safeInteger,
  keyRowFromRecord,
  incarnationOf,
  executePrepared,
  sequencedEventFromRow,
  mailboxRefusal,
  retryingUniqueViolation,
} from "./postgres-rows.ts";

/**
 * Readers whose mailbox pages one statement reads. Bounds what one result holds: each page is at most
 * mailboxPageLimitMax events, trimmed to historyPageBytesMax after the read.
 */
const mailboxPageReadersMax = 32;

/** The ConversationStore operations on mailboxes: appendMailbox, mailboxPage, trimMailbox. */
export class PostgresMailboxes {
  /** The mailbox pages asked for within one turn, read in one statement. */
  private readonly pageReads: TurnBatch<MailboxPageInput, MailboxPageResult>;

  /** `pool`: the database's own connections, for the mailbox pages run as a named statement (executePrepared). */
  constructor(
    private readonly database: NodePgDatabase,
    private readonly pool: Pool,
  ) {
    this.pageReads = new TurnBatch((inputs) => this.mailboxPages(inputs), mailboxPageReadersMax, setImmediate);
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
    if (row === undefined) return (await mailboxRefusal(this.database, userId, epoch)) ?? fenced;
    if (result.rows.length > 1) throw new StoreRowError(`mailbox append returned ${result.rows.length} rows`);
    const deduplicated = row["deduplicated"];
    if (typeof deduplicated !== "boolean") throw new StoreRowError("mailbox append row: deduplicated must be a boolean");
    return { outcome: "appended", seq: safeInteger(row["seq"], "mailbox_events.seq"), deduplicated };
  }

  mailboxPage(input: MailboxPageInput): Promise<MailboxPageResult> {
    return this.pageReads.run(input);
  }

  /**
   * The pages of one turn's readers in one statement, so the head and the events of each come from one
   * snapshot. Always at least one row per reader: the user's (possibly missing) mailbox, with no event
   * columns when the page is empty. Rows come ordered by reader, then seq.
   */
  private async mailboxPages(inputs: readonly MailboxPageInput[]): Promise<Settled<MailboxPageResult>[]> {
    const rows = await executePrepared(
      this.pool,
      "cellwire-mailbox-pages",
      sql`
      select wanted.reader, mailboxes.last_seq as head_seq, mailboxes.floor_seq, mailboxes.incarnation, page.seq, page.event,
             mailboxes.state, mailboxes.moving_to_cell_id, mailboxes.moved_epoch, mailboxes.owner_epoch
      from unnest(${sql.param(inputs.map((input) => input.userId))}::text[],
                  ${sql.param(inputs.map((input) => input.afterSeq))}::bigint[],
                  ${sql.param(inputs.map((input) => input.limit))}::integer[])
             with ordinality as wanted(user_id, after_seq, page_limit, reader)
      left join mailboxes on mailboxes.user_id = wanted.user_id
      left join lateral (
        select seq, event from mailbox_events
        where user_id = wanted.user_id and seq > wanted.after_seq
        order by seq
        limit wanted.page_limit
      ) page on true
      order by wanted.reader, page.seq
    `,
    );
    const rowsByReader: Record<string, unknown>[][] = inputs.map(() => []);
    for (const row of rows) {
      // ordinality counts from 1; bigint comes back as text.
      const reader = Number(row["reader"]) - 1;
      const readerRows = rowsByReader[reader];
      if (readerRows === undefined) throw new StoreRowError(`mailbox pages returned a row for reader ${String(row["reader"])}`);
      readerRows.push(row);
    }
    return rowsByReader.map((readerRows) => {
      try {
        return { ok: true, value: pageFromRows(readerRows) };
      } catch (error) {
        return { ok: false, error };
      }
    });
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
}

/** One reader's page from its rows of the mailbox pages statement. */
function pageFromRows(rows: readonly Record<string, unknown>[]): MailboxPageResult {
  const first = rows[0];
  if (first === undefined) throw new StoreRowError("mailbox page returned no row");
  if (first["state"] !== null) {
    const refusal = readRefusal(keyRowFromRecord(first));
    if (refusal !== undefined) return refusal;
  }
  const headSeq = first["head_seq"] === null ? 0 : safeInteger(first["head_seq"], "mailboxes.last_seq");
  const floorSeq = first["floor_seq"] === null ? 0 : safeInteger(first["floor_seq"], "mailboxes.floor_seq");
  const incarnation = incarnationOf(first);
  const events = rows.filter((row) => row["seq"] !== null).map(sequencedEventFromRow);
  return { outcome: "page", events: trimToPageBudget(events).kept, headSeq, floorSeq, incarnation };
}
