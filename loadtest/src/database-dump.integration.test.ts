// dumpCellDatabases against the machine's Postgres: cell databases made by hand with the columns the
// cells use (cell "a" with the mailbox tables and the members' join points, cell "b" from before both,
// cell "c" holding a mailbox event of the kind messages were before decision 0009), dumped in pages of two
// rows so that every table spans several pages.
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { cellDatabaseName, type MailboxEvent, type Message } from "@cellwire/protocol";
import { DatabaseDumpError, dumpCellDatabases } from "./database-dump.ts";
import { checkHistory, type HistoryRecord } from "./history-checker.ts";

const postgresAdminUrl = "postgres://postgres@127.0.0.1:5432/postgres";
const namespace = `t${Date.now().toString(36)}${Math.random().toString(36).slice(2, 8)}`;
const cellIds = ["a", "b", "c"] as const;

const group = "g-dumpgroup000000000000000".slice(0, 24);
const direct = "d-dumpdirect00000000000000".slice(0, 24);
/** 2023-11-14T22:13:20.123Z: a millisecond part, to see sent_at come back exact. */
const sentAtMs = 1_700_000_000_123;

/** `joinPoints`: the members table with joined_after_seq, as cells have it since decision 0009. */
const conversationsTable = (joinPoints: boolean): string => `
  create table conversations (
    id text primary key, kind text not null, title text, created_by_user_id text not null,
    created_at timestamptz not null default now(), last_seq bigint not null default 0
  );
  create table conversation_members (
    conversation_id text not null references conversations(id), user_id text not null,
    joined_at timestamptz not null default now(),
    ${joinPoints ? "joined_after_seq bigint not null default 0," : ""}
    primary key (conversation_id, user_id)
  );
  create table messages (
    conversation_id text not null references conversations(id), seq bigint not null, message_id text not null unique,
    sender_user_id text not null, sender_device_id text not null, client_message_id text not null, body text not null,
    sent_at timestamptz not null default now(), primary key (conversation_id, seq)
  );`;
const mailboxTables = `
  create table mailboxes (user_id text primary key, last_seq bigint not null default 0, floor_seq bigint not null default 0);
  create table mailbox_events (user_id text not null, seq bigint not null, event_id text not null, event jsonb not null, primary key (user_id, seq));`;

function message(conversationId: string, seq: number, senderUserId: string, body: string): Message {
  return {
    conversationId,
    messageId: `${conversationId.slice(0, 1)}-message-${seq}`,
    seq,
    senderUserId,
    senderDeviceId: "phone",
    clientMessageId: `${senderUserId}-${conversationId.slice(0, 1)}-${seq}`,
    body,
    sentAtMs: sentAtMs + seq,
  };
}

// Cell a: a group of alice and bob with three messages, erin added after seq 2; their mailboxes hold their
// joined events and a receipt. Cell b: a direct conversation of carol and dave, no mailbox tables and no
// join points.
const groupMessages = [
  message(group, 1, "alice", "one"),
  message(group, 2, "bob", "two, with ünïcode ✓"),
  message(group, 3, "alice", "three"),
];
const directMessages = [message(direct, 1, "carol", "hi"), message(direct, 2, "dave", "hello")];
const groupMembers = [
  { userId: "alice", joinedAfterSeq: 0 },
  { userId: "bob", joinedAfterSeq: 0 },
  { userId: "erin", joinedAfterSeq: 2 },
];
const joinedGroup = (afterSeq: number): MailboxEvent => ({
  kind: "joined",
  conversationId: group,
  conversationKind: "group",
  title: "dump",
  afterSeq,
  addedByUserId: "alice",
});
const receipt: MailboxEvent = { kind: "receipt", conversationId: group, userId: "bob", readSeq: 3, deliveredSeq: 3 };
const mailboxEvents = (afterSeq: number): { eventId: string; event: MailboxEvent }[] => [
  { eventId: `joined-${group}`, event: joinedGroup(afterSeq) },
  { eventId: "receipt-bob-3", event: receipt },
];

async function withDatabase(databaseName: string, use: (client: pg.Client) => Promise<void>): Promise<void> {
  const url = new URL(postgresAdminUrl);
  url.pathname = `/${databaseName}`;
  const client = new pg.Client({ connectionString: url.toString() });
  await client.connect();
  try {
    await use(client);
  } finally {
    await client.end();
  }
}

async function adminQuery(text: string): Promise<void> {
  const client = new pg.Client({ connectionString: postgresAdminUrl });
  await client.connect();
  try {
    await client.query(text);
  } finally {
    await client.end();
  }
}

/** Members without a join point go into a table without the column. */
async function insertConversation(
  client: pg.Client,
  id: string,
  kind: string,
  members: { userId: string; joinedAfterSeq?: number }[],
  messages: Message[],
): Promise<void> {
  await client.query("insert into conversations (id, kind, created_by_user_id, last_seq) values ($1, $2, $3, $4)", [
    id,
    kind,
    members[0]?.userId,
    messages.length,
  ]);
  for (const { userId, joinedAfterSeq } of members) {
    if (joinedAfterSeq === undefined)
      await client.query("insert into conversation_members (conversation_id, user_id) values ($1, $2)", [id, userId]);
    else
      await client.query("insert into conversation_members (conversation_id, user_id, joined_after_seq) values ($1, $2, $3)", [
        id,
        userId,
        joinedAfterSeq,
      ]);
  }
  for (const stored of messages) {
    await client.query(
      `insert into messages (conversation_id, seq, message_id, sender_user_id, sender_device_id, client_message_id, body, sent_at)
       values ($1, $2, $3, $4, $5, $6, $7, to_timestamp($8::numeric / 1000))`,
      [
        stored.conversationId,
        stored.seq,
        stored.messageId,
        stored.senderUserId,
        stored.senderDeviceId,
        stored.clientMessageId,
        stored.body,
        stored.sentAtMs,
      ],
    );
  }
}

async function insertMailbox(client: pg.Client, userId: string, events: { eventId: string; event: unknown }[]): Promise<void> {
  await client.query("insert into mailboxes (user_id, last_seq, floor_seq) values ($1, $2, 0)", [userId, events.length]);
  for (const [index, { eventId, event }] of events.entries()) {
    await client.query("insert into mailbox_events (user_id, seq, event_id, event) values ($1, $2, $3, $4::jsonb)", [
      userId,
      index + 1,
      eventId,
      JSON.stringify(event),
    ]);
  }
}

beforeAll(async () => {
  for (const cellId of cellIds) await adminQuery(`create database "${cellDatabaseName(namespace, cellId)}"`);
  await withDatabase(cellDatabaseName(namespace, "a"), async (client) => {
    await client.query(conversationsTable(true) + mailboxTables);
    await insertConversation(client, group, "group", groupMembers, groupMessages);
    for (const { userId, joinedAfterSeq } of groupMembers) await insertMailbox(client, userId, mailboxEvents(joinedAfterSeq));
  });
  await withDatabase(cellDatabaseName(namespace, "b"), async (client) => {
    await client.query(conversationsTable(false));
    await insertConversation(client, direct, "direct", [{ userId: "carol" }, { userId: "dave" }], directMessages);
  });
  await withDatabase(cellDatabaseName(namespace, "c"), async (client) => {
    await client.query(conversationsTable(true) + mailboxTables);
    await insertMailbox(client, "frank", [{ eventId: "m-1-frank", event: { kind: "message", message: groupMessages[0] } }]);
  });
});

afterAll(async () => {
  for (const cellId of cellIds) await adminQuery(`drop database if exists "${cellDatabaseName(namespace, cellId)}" with (force)`);
});

describe("dumpCellDatabases", () => {
  it("reads every cell's messages, members with their join points and mailboxes, with defaults where a cell predates them", async () => {
    const database = await dumpCellDatabases({ postgresAdminUrl, namespace, cellIds: ["a", "b"], pageRowsMax: 2 });
    expect(database.messages).toEqual([...groupMessages, ...directMessages]);
    expect(database.members).toEqual([
      { conversationId: group, members: groupMembers },
      // Cell b has no joined_after_seq column: its members read as the migration's default.
      {
        conversationId: direct,
        members: [
          { userId: "carol", joinedAfterSeq: 0 },
          { userId: "dave", joinedAfterSeq: 0 },
        ],
      },
    ]);
    expect(database.mailboxes).toEqual(
      groupMembers.map(({ userId, joinedAfterSeq }) => ({
        userId,
        lastSeq: 2,
        floorSeq: 0,
        events: mailboxEvents(joinedAfterSeq).map(({ eventId, event }, index) => ({ seq: index + 1, eventId, event })),
      })),
    );

    // The dump is what the checker reads: with the sends that explain it, a run that is not quiescent
    // (cell b has no mailboxes) passes.
    const record: HistoryRecord = {
      sends: [...groupMessages, ...directMessages].map(({ senderUserId, senderDeviceId, conversationId, clientMessageId, body }) => ({
        senderUserId,
        senderDeviceId,
        conversationId,
        clientMessageId,
        body,
      })),
      acks: groupMessages.map(({ senderUserId, conversationId, clientMessageId, messageId, seq }) => ({
        senderUserId,
        conversationId,
        clientMessageId,
        messageId,
        seq,
      })),
      deliveries: [],
      database,
      expectComplete: false,
    };
    expect(checkHistory(record).findings).toEqual([]);
  });

  it("stops with bad_row on a row that does not decode (a message event from before decision 0009), naming its table and key", async () => {
    const dump = dumpCellDatabases({ postgresAdminUrl, namespace, cellIds: ["c"] });
    await expect(dump).rejects.toBeInstanceOf(DatabaseDumpError);
    await expect(dump).rejects.toMatchObject({
      code: "bad_row",
      message: expect.stringContaining("mailbox_events (user frank seq 1: event)"),
    });
  });

  it("stops with too_many_rows past rowsPerTableMax", async () => {
    const dump = dumpCellDatabases({ postgresAdminUrl, namespace, cellIds: ["a"], pageRowsMax: 2, rowsPerTableMax: 2 });
    await expect(dump).rejects.toMatchObject({ name: "DatabaseDumpError", code: "too_many_rows" });
  });

  it("stops with connect_failed for a cell whose database does not exist", async () => {
    const dump = dumpCellDatabases({ postgresAdminUrl, namespace, cellIds: ["zz"] });
    await expect(dump).rejects.toMatchObject({ name: "DatabaseDumpError", code: "connect_failed" });
  });
});
