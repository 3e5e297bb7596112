// Reads the cell databases of a run into the `database` part of a HistoryRecord. Every row is decoded
// before use (pg hands bigint columns over as strings, jsonb as whatever JSON it held), so a corrupt row
// stops the dump with its table and key named rather than reaching the checker as a wrong value.
//
// Each cell is read inside one repeatable-read transaction, so what one cell says is a consistent
// snapshot; cells are read one after another, so run the dump once the run is quiescent.
import pg from "pg";
import {
  cellDatabaseName,
  conversationId as conversationIdDecoder,
  decode,
  isRecord,
  mailboxEvent as mailboxEventDecoder,
  message as messageDecoder,
  string,
  userId as userIdDecoder,
  type DecodeResult,
  type Decoder,
  type Message,
} from "@cellwire/protocol";
import type { ConversationMember, ConversationMembers, DatabaseSnapshot, MailboxEntry, StoredMailbox } from "./history-checker.ts";

export type DumpCellDatabasesOptions = {
  /** A URL of the Postgres server holding the cell databases; its database part is replaced per cell. */
  postgresAdminUrl: string;
  namespace: string;
  cellIds: readonly string[];
  /** Rows read per query (keyset pages), default dumpPageRowsDefault. */
  pageRowsMax?: number;
  /** Rows of one table of one cell past which the dump stops with too_many_rows, default dumpRowsPerTableMax. */
  rowsPerTableMax?: number;
};

export const dumpPageRowsDefault = 5000;
/** A dump is held in memory whole: past this many rows in one table of one cell it stops rather than exhaust the heap. */
export const dumpRowsPerTableMax = 2_000_000;
const connectTimeoutMs = 5000;
const eventIdLengthMax = 200;

export type DatabaseDumpErrorCode = "connect_failed" | "bad_row" | "too_many_rows";

export class DatabaseDumpError extends Error {
  override readonly name = "DatabaseDumpError";
  readonly code: DatabaseDumpErrorCode;
  constructor(code: DatabaseDumpErrorCode, message: string, options?: ErrorOptions) {
    super(message, options);
    this.code = code;
  }
}

/**
 * The messages, members (with their join points) and mailboxes (joined and receipt events) of every named
 * cell, all cells together (in the order of `cellIds`, each table in key order). Mailboxes are [] for a
 * cell whose database has no mailbox tables yet. Members of one conversation found in several cells are
 * merged; a member found with two join points is kept twice, for the checker to report.
 */
export async function dumpCellDatabases(options: DumpCellDatabasesOptions): Promise<DatabaseSnapshot> {
  const limits = {
    pageRowsMax: options.pageRowsMax ?? dumpPageRowsDefault,
    rowsPerTableMax: options.rowsPerTableMax ?? dumpRowsPerTableMax,
  };
  const messages: Message[] = [];
  const membersByConversation = new Map<string, Map<string, ConversationMember>>();
  const mailboxes: StoredMailbox[] = [];
  for (const cellId of options.cellIds) {
    const databaseName = cellDatabaseName(options.namespace, cellId);
    const cell = await withClient(databaseUrl(options.postgresAdminUrl, databaseName), databaseName, (client) =>
      dumpCell(client, databaseName, limits),
    );
    // A loop, not push(...rows): spreading millions of arguments overflows the stack.
    for (const message of cell.messages) messages.push(message);
    for (const { conversationId, member } of cell.members) {
      const members = membersByConversation.get(conversationId) ?? new Map<string, ConversationMember>();
      members.set(`${member.userId} ${member.joinedAfterSeq}`, member);
      membersByConversation.set(conversationId, members);
    }
    for (const mailbox of cell.mailboxes) mailboxes.push(mailbox);
  }
  const members: ConversationMembers[] = [...membersByConversation].map(([conversationId, byKey]) => ({
    conversationId,
    members: [...byKey.values()],
  }));
  return { messages, members, mailboxes };
}

type DumpLimits = { pageRowsMax: number; rowsPerTableMax: number };
type MemberRow = { conversationId: string; member: ConversationMember };
type MailboxRow = { userId: string; lastSeq: number; floorSeq: number };
type MailboxEventRow = { userId: string; entry: MailboxEntry };

async function dumpCell(
  client: pg.Client,
  databaseName: string,
  limits: DumpLimits,
): Promise<{ messages: Message[]; members: MemberRow[]; mailboxes: StoredMailbox[] }> {
  await client.query("begin isolation level repeatable read read only");
  try {
    // A key that moved out of the cell leaves a tombstone (state 'moved'), and a copy being imported is
    // not the key's yet: only active keys are the cell's data. Databases older than migration have no state.
    const activeConversation = (await hasColumn(client, "conversations", "state"))
      ? "and conversation_id in (select id from conversations where state = 'active')"
      : "";
    const messages = await readPaged(client, limits, {
      what: `${databaseName}.messages`,
      query: `select conversation_id, seq, message_id, sender_user_id, sender_device_id, client_message_id, body,
                     floor(extract(epoch from sent_at) * 1000)::bigint as sent_at_ms
              from messages
              where ($1::text is null or (conversation_id, seq) > ($1::text, $2::bigint)) ${activeConversation}
              order by conversation_id, seq
              limit $3`,
      cursorWidth: 2,
      cursorOf: (message: Message) => [message.conversationId, message.seq],
      decodeRow: messageFromRow,
    });
    // The join point arrived with a later migration, whose default (0) is what an older row means.
    const joinedAfterSeq = (await hasColumn(client, "conversation_members", "joined_after_seq"))
      ? "joined_after_seq"
      : "0::bigint as joined_after_seq";
    const members = await readPaged(client, limits, {
      what: `${databaseName}.conversation_members`,
      query: `select conversation_id, user_id, ${joinedAfterSeq}
              from conversation_members
              where ($1::text is null or (conversation_id, user_id) > ($1::text, $2::text)) ${activeConversation}
              order by conversation_id, user_id
              limit $3`,
      cursorWidth: 2,
      cursorOf: (row: MemberRow) => [row.conversationId, row.member.userId],
      decodeRow: memberFromRow,
    });
    const mailboxes = (await hasMailboxTables(client)) ? await readMailboxes(client, databaseName, limits) : [];
    return { messages, members, mailboxes };
  } finally {
    // Read only: nothing to keep, and a rollback also ends a transaction that a failed query aborted. Its
    // own failure (a broken connection) must not hide the error that brought us here.
    await client.query("rollback").catch(() => undefined);
  }
}

/** The mailbox tables arrive with a later migration; a cell without them has no mailboxes to dump. */
async function hasMailboxTables(client: pg.Client): Promise<boolean> {
  const result = await client.query("select to_regclass('mailboxes') is not null and to_regclass('mailbox_events') is not null as present");
  const row: unknown = result.rows[0];
  return isRecord(row) && row["present"] === true;
}

async function hasColumn(client: pg.Client, table: string, column: string): Promise<boolean> {
  const result = await client.query(
    "select count(*)::int as present from information_schema.columns where table_name = $1 and column_name = $2",
    [table, column],
  );
  const row: unknown = result.rows[0];
  return isRecord(row) && row["present"] === 1;
}

async function readMailboxes(client: pg.Client, databaseName: string, limits: DumpLimits): Promise<StoredMailbox[]> {
  const activeMailbox = (await hasColumn(client, "mailboxes", "state")) ? "and state = 'active'" : "";
  const activeEvents = activeMailbox === "" ? "" : "and user_id in (select user_id from mailboxes where state = 'active')";
  const heads = await readPaged(client, limits, {
    what: `${databaseName}.mailboxes`,
    query: `select user_id, last_seq, floor_seq
            from mailboxes
            where ($1::text is null or user_id > $1::text) ${activeMailbox}
            order by user_id
            limit $2`,
    cursorWidth: 1,
    cursorOf: (mailbox: MailboxRow) => [mailbox.userId],
    decodeRow: mailboxFromRow,
  });
  const events = await readPaged(client, limits, {
    what: `${databaseName}.mailbox_events`,
    query: `select user_id, seq, event_id::text as event_id, event
            from mailbox_events
            where ($1::text is null or (user_id, seq) > ($1::text, $2::bigint)) ${activeEvents}
            order by user_id, seq
            limit $3`,
    cursorWidth: 2,
    cursorOf: (row: MailboxEventRow) => [row.userId, row.entry.seq],
    decodeRow: mailboxEventFromRow,
  });
  const mailboxes = new Map<string, StoredMailbox>();
  for (const head of heads) mailboxes.set(head.userId, { ...head, events: [] });
  for (const { userId, entry } of events) {
    let mailbox = mailboxes.get(userId);
    if (mailbox === undefined) {
      // Events without a head row: dumped as they are, with a head of 0, for the checker to report.
      mailbox = { userId, lastSeq: 0, floorSeq: 0, events: [] };
      mailboxes.set(userId, mailbox);
    }
    mailbox.events.push(entry);
  }
  return [...mailboxes.values()];
}

type PagedRead<T> = {
  what: string;
  /** Parameters: the cursor's cursorWidth values ($1.., all null for the first page), then the page size. */
  query: string;
  cursorWidth: number;
  cursorOf: (row: T) => [string, ...(string | number)[]];
  decodeRow: (row: unknown, what: string) => T;
};

/** Reads a whole table in keyset pages, so no single result holds more than pageRowsMax rows. */
async function readPaged<T>(client: pg.Client, limits: DumpLimits, read: PagedRead<T>): Promise<T[]> {
  const rows: T[] = [];
  let cursor: (string | number | null)[] = new Array<null>(read.cursorWidth).fill(null);
  for (;;) {
    const result = await client.query(read.query, [...cursor, limits.pageRowsMax]);
    for (const raw of result.rows as unknown[]) rows.push(read.decodeRow(raw, read.what));
    if (rows.length > limits.rowsPerTableMax) {
      throw new DatabaseDumpError("too_many_rows", `${read.what} holds more than ${limits.rowsPerTableMax} rows (rowsPerTableMax)`);
    }
    const last = rows.at(-1);
    if (result.rows.length < limits.pageRowsMax || last === undefined) return rows;
    cursor = read.cursorOf(last);
  }
}

// --- Rows ------------------------------------------------------------------------------------------

function messageFromRow(row: unknown, what: string): Message {
  const record = recordOf(row, what);
  const candidate = {
    conversationId: record["conversation_id"],
    messageId: record["message_id"],
    seq: safeInteger(record["seq"], what, "seq"),
    senderUserId: record["sender_user_id"],
    senderDeviceId: record["sender_device_id"],
    clientMessageId: record["client_message_id"],
    body: record["body"],
    sentAtMs: safeInteger(record["sent_at_ms"], what, "sent_at"),
  };
  return decoded(messageDecoder, candidate, what, `conversation ${String(candidate.conversationId)} seq ${candidate.seq}`);
}

function memberFromRow(row: unknown, what: string): MemberRow {
  const record = recordOf(row, what);
  const conversationId = decoded(conversationIdDecoder, record["conversation_id"], what, "conversation_id");
  const userId = decoded(userIdDecoder, record["user_id"], what, `conversation ${conversationId}: user_id`);
  const joinedAfterSeq = safeInteger(record["joined_after_seq"], what, `conversation ${conversationId} user ${userId}: joined_after_seq`);
  if (joinedAfterSeq < 0)
    throw new DatabaseDumpError(
      "bad_row",
      `${what} (conversation ${conversationId} user ${userId}: joined_after_seq): negative: ${joinedAfterSeq}`,
    );
  return { conversationId, member: { userId, joinedAfterSeq } };
}

function mailboxFromRow(row: unknown, what: string): MailboxRow {
  const record = recordOf(row, what);
  const userId = decoded(userIdDecoder, record["user_id"], what, "user_id");
  return {
    userId,
    lastSeq: safeInteger(record["last_seq"], what, `user ${userId}: last_seq`),
    floorSeq: safeInteger(record["floor_seq"], what, `user ${userId}: floor_seq`),
  };
}

const eventIdDecoder: Decoder<string> = string({ minLength: 1, maxLength: eventIdLengthMax });

function mailboxEventFromRow(row: unknown, what: string): MailboxEventRow {
  const record = recordOf(row, what);
  const userId = decoded(userIdDecoder, record["user_id"], what, "user_id");
  const seq = safeInteger(record["seq"], what, `user ${userId}: seq`);
  const key = `user ${userId} seq ${seq}`;
  const eventId = decoded(eventIdDecoder, record["event_id"], what, `${key}: event_id`);
  // Strict: only the kinds this checker knows (joined, receipt). A message event left from before
  // decision 0009 stops the dump rather than be checked as something it is not.
  const event = decoded(mailboxEventDecoder, record["event"], what, `${key}: event`);
  return { userId, entry: { seq, eventId, event } };
}

function recordOf(row: unknown, what: string): Record<string, unknown> {
  if (!isRecord(row)) throw new DatabaseDumpError("bad_row", `${what}: a row must be an object`);
  return row;
}

function decoded<T>(decoder: Decoder<T>, input: unknown, what: string, where: string): T {
  const result: DecodeResult<T> = decode(decoder, input);
  if (!result.ok) throw new DatabaseDumpError("bad_row", `${what} (${where}): ${result.failure.path} ${result.failure.reason}`);
  return result.value;
}

/** pg returns bigint columns as strings, since a JavaScript number cannot hold every int8: keep only safe ones. */
function safeInteger(value: unknown, what: string, where: string): number {
  const number =
    typeof value === "number" ? value : typeof value === "string" && /^-?[0-9]{1,20}$/.test(value) ? Number(value) : Number.NaN;
  if (!Number.isSafeInteger(number))
    throw new DatabaseDumpError("bad_row", `${what} (${where}): not a safe integer: ${String(value).slice(0, 40)}`);
  return number;
}

// --- Connections -----------------------------------------------------------------------------------

/** The URL of database `databaseName` on the server of `adminUrl` (same credentials and options). */
function databaseUrl(adminUrl: string, databaseName: string): string {
  const url = new URL(adminUrl);
  url.pathname = `/${encodeURIComponent(databaseName)}`;
  return url.toString();
}

async function withClient<T>(url: string, databaseName: string, use: (client: pg.Client) => Promise<T>): Promise<T> {
  const client = new pg.Client({ connectionString: url, connectionTimeoutMillis: connectTimeoutMs });
  // An idle client whose server goes away emits 'error'; without a listener that would crash the process.
  client.on("error", () => undefined);
  try {
    await client.connect();
  } catch (error) {
    const reason = error instanceof Error ? error.message : String(error);
    throw new DatabaseDumpError("connect_failed", `cannot open cell database ${databaseName}: ${reason}`, { cause: error });
  }
  try {
    return await use(client);
  } finally {
    await client.end().catch(() => undefined);
  }
}
