// The measured prototype behind docs/decisions/0009: what one delivery costs Postgres under each group
// data model, with the batching both would get (group commit: many sends per transaction, multi-row
// statements). It creates a scratch database, runs the same stream of sends three ways and prints, per
// model, the Postgres backend's CPU microseconds and the WAL bytes per message and per delivery:
//
// - per-message: today's path, one statement per send (message + one outbox row per member), then one
//   append statement per member's mailbox (as the relay does), each its own commit.
// - fan-out on write, batched: per transaction, the messages, then one mailbox row per member and one
//   head update per distinct member, all as multi-row statements (the mailbox event holds the message).
// - fan-out of pointers, batched: as above, but a mailbox row is only (user, seq, conversation, conversation
//   seq), the smallest row fan-out on write can get away with.
// - conversation log, batched: per transaction, the messages and the conversations' heads only; members
//   read the log with a cursor per conversation, so a delivery writes nothing.
//
//   npx tsx cli/src/bench/data-model-prototype.ts [--group 10] [--messages 20000] [--batch 50]
//     [--admin-url postgres://postgres@127.0.0.1:5432/postgres]
import { readFileSync } from "node:fs";
import { parseArgs } from "node:util";
import pg from "pg";

const { values } = parseArgs({
  options: {
    group: { type: "string", default: "10" },
    messages: { type: "string", default: "20000" },
    batch: { type: "string", default: "50" },
    conversations: { type: "string", default: "100" },
    "admin-url": { type: "string", default: "postgres://postgres@127.0.0.1:5432/postgres" },
  },
});
const groupSize = Number(values.group);
const messageCount = Number(values.messages);
const batchSize = Number(values.batch);
const conversationCount = Number(values.conversations);
if (![groupSize, messageCount, batchSize, conversationCount].every((value) => Number.isSafeInteger(value) && value > 0)) {
  throw new Error("--group, --messages, --batch and --conversations take positive integers");
}

const databaseName = `cellwire_prototype_${process.pid}`;
const adminUrl = values["admin-url"];
const databaseUrl = new URL(adminUrl);
databaseUrl.pathname = `/${databaseName}`;

const schema = `
  create table conversations (id text primary key, last_seq bigint not null default 0, owner_epoch bigint not null default 0);
  create table conversation_members (conversation_id text not null, user_id text not null, primary key (conversation_id, user_id));
  create table messages (conversation_id text not null, seq bigint not null, message_id text not null unique, sender_user_id text not null,
    sender_device_id text not null, client_message_id text not null, body text not null, sent_at timestamptz not null default now(),
    primary key (conversation_id, seq), unique (conversation_id, sender_user_id, client_message_id));
  create table mailboxes (user_id text primary key, last_seq bigint not null default 0, owner_epoch bigint not null default 0);
  create table mailbox_events (user_id text not null, seq bigint not null, event_id text not null, event jsonb not null,
    created_at timestamptz not null default now(), primary key (user_id, seq), unique (user_id, event_id));
  create table mailbox_pointers (user_id text not null, seq bigint not null, conversation_id text not null, conversation_seq bigint not null,
    primary key (user_id, seq), unique (user_id, conversation_id, conversation_seq));
  create table outbox (id bigserial primary key, conversation_id text not null, recipient_user_id text not null, event_id text not null,
    event jsonb not null, created_at timestamptz not null default now(), attempts integer not null default 0, unique (recipient_user_id, event_id));
  create index on outbox (conversation_id, id);
`;

type Send = { conversationId: string; senderUserId: string; clientMessageId: string; body: string };

function membersOf(conversation: number): string[] {
  return Array.from({ length: groupSize }, (_, member) => `u${conversation}x${member}`);
}

function sendsFor(run: string): Send[] {
  return Array.from({ length: messageCount }, (_, index) => {
    const conversation = index % conversationCount;
    const members = membersOf(conversation);
    return {
      conversationId: `c${conversation}`,
      senderUserId: members[index % members.length] ?? "u",
      clientMessageId: `${run}-${index}`,
      body: `message ${index} `.padEnd(100, "x"),
    };
  });
}

/** utime + stime of a process in clock ticks (100 per second on Linux). */
function cpuTicks(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return Number(fields[11]) + Number(fields[12]);
}

async function walBytes(client: pg.Client): Promise<bigint> {
  const result = await client.query<{ lsn: string }>("select pg_current_wal_lsn()::text as lsn");
  const [high, low] = (result.rows[0]?.lsn ?? "0/0").split("/");
  return (BigInt(`0x${high ?? "0"}`) << 32n) + BigInt(`0x${low ?? "0"}`);
}

type Model = { readonly name: string; run(client: pg.Client, sends: Send[]): Promise<void> };

const perMessage: Model = {
  name: "per-message (today)",
  async run(client, sends) {
    for (const send of sends) {
      const messageId = `${send.clientMessageId}-id`;
      const inserted = await client.query<{ recipient_user_id: string; event: unknown }>(
        `with advanced as (
           update conversations set last_seq = last_seq + 1 where id = $1 returning last_seq
         ), inserted as (
           insert into messages (conversation_id, seq, message_id, sender_user_id, sender_device_id, client_message_id, body)
           select $1, last_seq, $2, $3, 'd', $4, $5 from advanced returning *
         )
         insert into outbox (conversation_id, recipient_user_id, event_id, event)
         select $1, members.user_id, 'message-' || $2, jsonb_build_object('kind', 'message', 'message', to_jsonb(inserted))
         from inserted join conversation_members members on members.conversation_id = $1
         returning id, recipient_user_id, event`,
        [send.conversationId, messageId, send.senderUserId, send.clientMessageId, send.body],
      );
      for (const row of inserted.rows) {
        await client.query(
          `with advanced as (
             insert into mailboxes (user_id, last_seq) values ($1, 1)
             on conflict (user_id) do update set last_seq = mailboxes.last_seq + 1 returning last_seq
           )
           insert into mailbox_events (user_id, seq, event_id, event) select $1, last_seq, $2, $3::jsonb from advanced`,
          [row.recipient_user_id, `message-${messageId}`, JSON.stringify(row.event)],
        );
      }
      await client.query("delete from outbox where conversation_id = $1", [send.conversationId]);
    }
  },
};

/** The messages of one batch, seqs assigned by one multi-row update of the conversations' heads. */
async function insertMessages(
  client: pg.Client,
  batch: Send[],
): Promise<{ conversationId: string; seq: number; messageId: string; send: Send }[]> {
  const counts = new Map<string, number>();
  for (const send of batch) counts.set(send.conversationId, (counts.get(send.conversationId) ?? 0) + 1);
  const heads = await client.query<{ id: string; last_seq: string }>(
    `update conversations set last_seq = conversations.last_seq + wanted.count
     from unnest($1::text[], $2::bigint[]) as wanted(id, count) where conversations.id = wanted.id
     returning conversations.id, conversations.last_seq`,
    [[...counts.keys()], [...counts.values()]],
  );
  const next = new Map<string, number>();
  for (const row of heads.rows) next.set(row.id, Number(row.last_seq) - (counts.get(row.id) ?? 0));
  const stored = batch.map((send) => {
    const seq = (next.get(send.conversationId) ?? 0) + 1;
    next.set(send.conversationId, seq);
    return { conversationId: send.conversationId, seq, messageId: `${send.clientMessageId}-id`, send };
  });
  await client.query(
    `insert into messages (conversation_id, seq, message_id, sender_user_id, sender_device_id, client_message_id, body)
     select conversation_id, seq, message_id, sender_user_id, 'd', client_message_id, body
     from unnest($1::text[], $2::bigint[], $3::text[], $4::text[], $5::text[], $6::text[])
       as rows(conversation_id, seq, message_id, sender_user_id, client_message_id, body)`,
    [
      stored.map((row) => row.conversationId),
      stored.map((row) => row.seq),
      stored.map((row) => row.messageId),
      stored.map((row) => row.send.senderUserId),
      stored.map((row) => row.send.clientMessageId),
      stored.map((row) => row.send.body),
    ],
  );
  return stored;
}

const fanOutOnWrite: Model = {
  name: "fan-out on write, batched",
  async run(client, sends) {
    for (let start = 0; start < sends.length; start += batchSize) {
      await client.query("begin");
      const stored = await insertMessages(client, sends.slice(start, start + batchSize));
      const deliveries = stored.flatMap((message) =>
        membersOf(Number(message.conversationId.slice(1))).map((userId) => ({
          userId,
          eventId: `message-${message.messageId}`,
          event: JSON.stringify({ kind: "message", message: { ...message.send, seq: message.seq, messageId: message.messageId } }),
        })),
      );
      const counts = new Map<string, number>();
      for (const delivery of deliveries) counts.set(delivery.userId, (counts.get(delivery.userId) ?? 0) + 1);
      // Locked in user order, so two workers' batches never deadlock on the same mailboxes.
      const heads = await client.query<{ user_id: string; last_seq: string }>(
        `insert into mailboxes (user_id, last_seq)
         select user_id, count from unnest($1::text[], $2::bigint[]) as wanted(user_id, count) order by user_id
         on conflict (user_id) do update set last_seq = mailboxes.last_seq + excluded.last_seq
         returning user_id, last_seq`,
        [[...counts.keys()], [...counts.values()]],
      );
      const next = new Map<string, number>();
      for (const row of heads.rows) next.set(row.user_id, Number(row.last_seq) - (counts.get(row.user_id) ?? 0));
      const seqs = deliveries.map((delivery) => {
        const seq = (next.get(delivery.userId) ?? 0) + 1;
        next.set(delivery.userId, seq);
        return seq;
      });
      await client.query(
        `insert into mailbox_events (user_id, seq, event_id, event)
         select * from unnest($1::text[], $2::bigint[], $3::text[], $4::jsonb[])`,
        [
          deliveries.map((delivery) => delivery.userId),
          seqs,
          deliveries.map((delivery) => delivery.eventId),
          deliveries.map((delivery) => delivery.event),
        ],
      );
      await client.query("commit");
    }
  },
};

/** Fan-out on write with the smallest row that can work: a pointer into the conversation's log. */
const fanOutPointers: Model = {
  name: "fan-out of pointers, batched",
  async run(client, sends) {
    for (let start = 0; start < sends.length; start += batchSize) {
      await client.query("begin");
      const stored = await insertMessages(client, sends.slice(start, start + batchSize));
      const deliveries = stored.flatMap((message) =>
        membersOf(Number(message.conversationId.slice(1))).map((userId) => ({
          userId,
          conversationId: message.conversationId,
          seq: message.seq,
        })),
      );
      const counts = new Map<string, number>();
      for (const delivery of deliveries) counts.set(delivery.userId, (counts.get(delivery.userId) ?? 0) + 1);
      const heads = await client.query<{ user_id: string; last_seq: string }>(
        `insert into mailboxes (user_id, last_seq)
         select user_id, count from unnest($1::text[], $2::bigint[]) as wanted(user_id, count) order by user_id
         on conflict (user_id) do update set last_seq = mailboxes.last_seq + excluded.last_seq
         returning user_id, last_seq`,
        [[...counts.keys()], [...counts.values()]],
      );
      const next = new Map<string, number>();
      for (const row of heads.rows) next.set(row.user_id, Number(row.last_seq) - (counts.get(row.user_id) ?? 0));
      const seqs = deliveries.map((delivery) => {
        const seq = (next.get(delivery.userId) ?? 0) + 1;
        next.set(delivery.userId, seq);
        return seq;
      });
      await client.query(
        `insert into mailbox_pointers (user_id, seq, conversation_id, conversation_seq)
         select * from unnest($1::text[], $2::bigint[], $3::text[], $4::bigint[])`,
        [
          deliveries.map((delivery) => delivery.userId),
          seqs,
          deliveries.map((delivery) => delivery.conversationId),
          deliveries.map((delivery) => delivery.seq),
        ],
      );
      await client.query("commit");
    }
  },
};

const conversationLog: Model = {
  name: "conversation log, batched",
  async run(client, sends) {
    for (let start = 0; start < sends.length; start += batchSize) {
      await client.query("begin");
      await insertMessages(client, sends.slice(start, start + batchSize));
      await client.query("commit");
    }
  },
};

const admin = new pg.Client({ connectionString: adminUrl });
await admin.connect();
await admin.query(`create database ${databaseName}`);
try {
  const client = new pg.Client({ connectionString: databaseUrl.toString() });
  await client.connect();
  await client.query(schema);
  for (let conversation = 0; conversation < conversationCount; conversation++) {
    await client.query("insert into conversations (id) values ($1)", [`c${conversation}`]);
    for (const userId of membersOf(conversation)) {
      await client.query("insert into conversation_members values ($1, $2)", [`c${conversation}`, userId]);
    }
  }
  const pidResult = await client.query<{ pid: number }>("select pg_backend_pid() as pid");
  const backendPid = pidResult.rows[0]?.pid ?? 0;
  process.stdout.write(
    `data model prototype: ${messageCount} sends to ${conversationCount} conversations of ${groupSize} members, ${batchSize} sends per batched transaction\n`,
  );
  for (const model of [perMessage, fanOutOnWrite, fanOutPointers, conversationLog]) {
    const sends = sendsFor(model.name.replace(/[^a-z]/g, ""));
    await client.query("checkpoint");
    const ticksBefore = cpuTicks(backendPid);
    const walBefore = await walBytes(client);
    const startedAt = performance.now();
    await model.run(client, sends);
    const elapsedMs = performance.now() - startedAt;
    const cpuUs = (cpuTicks(backendPid) - ticksBefore) * 10_000;
    const wal = Number((await walBytes(client)) - walBefore);
    const deliveries = messageCount * groupSize;
    process.stdout.write(
      `${JSON.stringify({
        model: model.name,
        group: groupSize,
        messages: messageCount,
        elapsedMs: Math.round(elapsedMs),
        postgresCpuUsPerMessage: Math.round(cpuUs / messageCount),
        postgresCpuUsPerDelivery: Number((cpuUs / deliveries).toFixed(1)),
        walBytesPerMessage: Math.round(wal / messageCount),
        clientWallUsPerMessage: Math.round((elapsedMs * 1000) / messageCount),
      })}\n`,
    );
  }
  await client.end();
} finally {
  await admin.query(`drop database if exists ${databaseName} with (force)`);
  await admin.end();
}
