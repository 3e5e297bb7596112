import { randomBytes } from "node:crypto";
import { copyFile, mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import pg from "pg";
import { drizzle } from "drizzle-orm/node-postgres";
import { migrate } from "drizzle-orm/node-postgres/migrator";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { databaseUrl as cellDatabaseUrl, dropCellDatabase, ensureCellDatabase, migrationsFolder } from "./database.ts";
import { PostgresConversationStore } from "./postgres-store.ts";
import { registerStoreContract } from "../../test/store-contract.ts";

const adminUrl = "postgres://postgres@127.0.0.1:5432/postgres";
const namespace = `t${Date.now().toString(36)}${randomBytes(3).toString("hex")}`;
const cellId = "store";
const groupMembersMax = 8;

const pools: pg.Pool[] = [];
let first: PostgresConversationStore | undefined;
let second: PostgresConversationStore | undefined;
let databaseUrl = "";

beforeAll(async () => {
  // Two concurrent bootstraps, as two workers of one cell starting at once.
  const [url, twin] = await Promise.all([ensureCellDatabase(adminUrl, namespace, cellId), ensureCellDatabase(adminUrl, namespace, cellId)]);
  expect(twin).toBe(url);
  databaseUrl = url;
  for (let index = 0; index < 2; index++) {
    const pool = new pg.Pool({ connectionString: url, max: 10 });
    pool.on("error", () => undefined);
    pools.push(pool);
  }
  const [firstPool, secondPool] = pools;
  if (firstPool === undefined || secondPool === undefined) throw new Error("pools missing");
  // Tombstones delete in batches of 3 rows here, so the contract exercises more than one batch.
  first = new PostgresConversationStore(firstPool, { groupMembersMax, tombstoneBatchRowsMax: 3 });
  second = new PostgresConversationStore(secondPool, { groupMembersMax });
});

afterAll(async () => {
  await Promise.all(pools.map((pool) => pool.end()));
  await dropCellDatabase(adminUrl, namespace, cellId);
});

type Journal = { entries: { tag: string }[] };

async function migrationJournal(): Promise<Journal> {
  const parsed: unknown = JSON.parse(await readFile(join(migrationsFolder, "meta", "_journal.json"), "utf8"));
  if (typeof parsed !== "object" || parsed === null || !("entries" in parsed) || !Array.isArray(parsed.entries)) {
    throw new Error("the migration journal has no entries");
  }
  return parsed as Journal;
}

function required<T>(value: T | undefined): T {
  if (value === undefined) throw new Error("store not ready");
  return value;
}

registerStoreContract("postgres", () => required(first), {
  secondStore: () => required(second),
  groupMembersMax,
  concurrentAppends: 200,
});

describe("cell database bootstrap", () => {
  it("is idempotent and records each migration once", async () => {
    await ensureCellDatabase(adminUrl, namespace, cellId);
    const journal = await migrationJournal();
    expect(journal.entries.length).toBeGreaterThanOrEqual(2);
    const client = new pg.Client({ connectionString: databaseUrl });
    await client.connect();
    try {
      const applied = await client.query("select count(*)::int as count from drizzle.__drizzle_migrations");
      expect(applied.rows[0]).toEqual({ count: journal.entries.length });
    } finally {
      await client.end();
    }
  });

  /**
   * Creates the database of cell `cellName` with the journal's first `count` migrations applied (as a
   * worker of an earlier version left it), runs `seed` on it, then lets ensureCellDatabase move it forward.
   * Returns a store on it; `cleanup` drops it.
   */
  async function databaseMovedForward(cellName: string, count: number, seed: (client: pg.Client) => Promise<void>) {
    const folder = await mkdtemp(join(tmpdir(), "cells-migrations-"));
    const url = cellDatabaseUrl(adminUrl, `${namespace}_cell_${cellName}`);
    const admin = new pg.Client({ connectionString: adminUrl });
    await admin.connect();
    try {
      const journal = await migrationJournal();
      const applied = journal.entries.slice(0, count);
      expect(applied).toHaveLength(count);
      await mkdir(join(folder, "meta"));
      for (const entry of applied) await copyFile(join(migrationsFolder, `${entry.tag}.sql`), join(folder, `${entry.tag}.sql`));
      await writeFile(join(folder, "meta", "_journal.json"), JSON.stringify({ ...journal, entries: applied }));
      await admin.query(`create database "${namespace}_cell_${cellName}"`);
      const client = new pg.Client({ connectionString: url });
      await client.connect();
      try {
        await migrate(drizzle({ client }), { migrationsFolder: folder });
        await seed(client);
      } finally {
        await client.end();
      }
    } finally {
      await admin.end();
      await rm(folder, { recursive: true, force: true });
    }
    await ensureCellDatabase(adminUrl, namespace, cellName);
    const pool = new pg.Pool({ connectionString: url, max: 2 });
    pool.on("error", () => undefined);
    return {
      pool,
      store: new PostgresConversationStore(pool),
      cleanup: async () => {
        await pool.end();
        await dropCellDatabase(adminUrl, namespace, cellName);
      },
    };
  }

  it("moves a database of the first schema forward, keeping its data: members join at 0 and sends take the next seqs", async () => {
    const conversationId = "g-0000000000000000000old";
    const moved = await databaseMovedForward("old", 1, async (client) => {
      await client.query(
        `insert into conversations (id, kind, title, created_by_user_id, last_seq) values ('${conversationId}', 'group', 't', 'alice', 1)`,
      );
      await client.query(
        `insert into conversation_members (conversation_id, user_id) values ('${conversationId}', 'alice'), ('${conversationId}', 'bob')`,
      );
      await client.query(
        `insert into messages (conversation_id, seq, message_id, sender_user_id, sender_device_id, client_message_id, body) values ('${conversationId}', 1, 'm-old', 'alice', 'phone', 'c-old', 'before')`,
      );
    });
    try {
      const { store } = moved;
      const history = await store.history({ conversationId, userId: "bob", beforeSeq: null, limit: 10 });
      expect(history.outcome === "history" && history.messages.map((message) => message.body)).toEqual(["before"]);
      const [sent] = await store.appendMessages([
        { conversationId, senderUserId: "bob", senderDeviceId: "phone", clientMessageId: "c-new", body: "after", epoch: 1 },
      ]);
      expect(sent).toMatchObject({ outcome: "stored", deduplicated: false, membersVersion: 0, message: { seq: 2, body: "after" } });
      expect(await store.members(conversationId)).toEqual({ outcome: "members", memberUserIds: ["alice", "bob"], membersVersion: 0 });
      const log = await store.messagesAfter({ conversationId, userId: "bob", afterSeq: null, limit: 10 });
      expect(log.outcome === "messages" && [log.afterSeq, log.messages.map((message) => message.body), log.headSeq]).toEqual([
        0,
        ["before", "after"],
        2,
      ]);
      // A message writes no outbox row.
      expect(await store.pendingOutbox({ olderThanMs: 0, limit: 10, afterId: 0 })).toEqual({
        entries: [],
        malformed: [],
        lastId: undefined,
        retried: [],
      });
    } finally {
      await moved.cleanup();
    }
  });

  it("drops the message copies of protocol 1 from the outbox, and cuts a protocol 1 mailbox whole (no holes) when moving forward", async () => {
    const journal = await migrationJournal();
    const logsMigration = journal.entries.findIndex((entry) => entry.tag === "0006_conversation_logs");
    expect(logsMigration).toBeGreaterThan(0);
    const conversationId = "g-00000000000000000000v1";
    const message = {
      conversationId,
      messageId: "m-1",
      seq: 1,
      senderUserId: "alice",
      senderDeviceId: "phone",
      clientMessageId: "c-1",
      body: "copied",
      sentAtMs: 1_700_000_000_000,
    };
    const receipt = { kind: "receipt", conversationId, userId: "bob", readSeq: 1, deliveredSeq: 1 };
    const moved = await databaseMovedForward("v1", logsMigration, async (client) => {
      await client.query(
        `insert into conversations (id, kind, title, created_by_user_id, last_seq) values ('${conversationId}', 'group', 't', 'alice', 1)`,
      );
      await client.query(
        `insert into conversation_members (conversation_id, user_id) values ('${conversationId}', 'alice'), ('${conversationId}', 'bob')`,
      );
      await client.query(
        `insert into messages (conversation_id, seq, message_id, sender_user_id, sender_device_id, client_message_id, body) values ('${conversationId}', 1, 'm-1', 'alice', 'phone', 'c-1', 'copied')`,
      );
      const rows: [string, string, unknown][] = [
        ["alice", "message-m-1", { kind: "message", message }],
        ["bob", "message-m-1", { kind: "message", message }],
        ["alice", `receipt-${conversationId}-bob-1-1`, receipt],
      ];
      for (const [recipient, eventId, event] of rows) {
        await client.query("insert into outbox (conversation_id, recipient_user_id, event_id, event) values ($1, $2, $3, $4)", [
          conversationId,
          recipient,
          eventId,
          JSON.stringify(event),
        ]);
      }
      await client.query("insert into mailboxes (user_id, last_seq) values ('alice', 2)");
      await client.query(
        "insert into mailbox_events (user_id, seq, event_id, event) values ('alice', 1, 'message-m-1', $1), ('alice', 2, $2, $3)",
        [JSON.stringify({ kind: "message", message }), `receipt-${conversationId}-bob-1-1`, JSON.stringify(receipt)],
      );
    });
    try {
      const { store } = moved;
      const outbox = await store.pendingOutbox({ olderThanMs: 0, limit: 10, afterId: 0 });
      expect(outbox.malformed).toEqual([]);
      expect(outbox.entries.map((entry) => [entry.recipientUserId, entry.event])).toEqual([["alice", receipt]]);
      // The mailbox keeps its head and is cut up to it: a device that held seq 1 (or none) resyncs,
      // and no device meets a hole between the old receipts that it could not read past.
      expect(await store.mailboxPage({ userId: "alice", afterSeq: 0, limit: 10 })).toEqual({
        outcome: "page",
        events: [],
        headSeq: 2,
        floorSeq: 2,
        incarnation: expect.stringMatching(/^[0-9a-f-]{36}$/),
      });
      // New events follow the head.
      const appended = await store.appendMailbox({
        userId: "alice",
        eventId: `joined-${conversationId}`,
        event: { kind: "joined", conversationId, conversationKind: "group", title: "t", afterSeq: 1, addedByUserId: "bob" },
        epoch: 1,
      });
      expect(appended).toEqual({ outcome: "appended", seq: 3, deduplicated: false });
      const log = await store.messagesAfter({ conversationId, userId: "bob", afterSeq: null, limit: 10 });
      expect(log.outcome === "messages" && log.messages.map((entry) => entry.body)).toEqual(["copied"]);
    } finally {
      await moved.cleanup();
    }
  });

  it("gives each mailbox of an earlier schema an incarnation of its own when moving forward (decision 0021)", async () => {
    const journal = await migrationJournal();
    const incarnationMigration = journal.entries.findIndex((entry) => entry.tag === "0009_mailbox_incarnations");
    expect(incarnationMigration).toBeGreaterThan(0);
    const moved = await databaseMovedForward("inc", incarnationMigration, async (client) => {
      await client.query("insert into mailboxes (user_id, last_seq) values ('alice', 0), ('bob', 0)");
    });
    try {
      const incarnations = await Promise.all(
        ["alice", "bob"].map(async (userId) => {
          const page = await moved.store.mailboxPage({ userId, afterSeq: 0, limit: 0 });
          return page.outcome === "page" ? page.incarnation : page.outcome;
        }),
      );
      for (const incarnation of incarnations) expect(incarnation).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/);
      expect(new Set(incarnations).size).toBe(2);
    } finally {
      await moved.cleanup();
    }
  });

  it("names Postgres, the URL and how to start it when the server is unreachable", async () => {
    // Port 1 is privileged and unused: the connection is refused at once.
    await expect(ensureCellDatabase("postgres://postgres@127.0.0.1:1/postgres", namespace, cellId)).rejects.toThrow(
      /Postgres at postgres:\/\/postgres@127\.0\.0\.1:1\/postgres.*pg_ctlcluster --skip-systemctl-redirect 15 main start/,
    );
  });

  it("drops the database even while a pool holds sessions on it", async () => {
    const otherCell = "dropme";
    const url = await ensureCellDatabase(adminUrl, namespace, otherCell);
    const pool = new pg.Pool({ connectionString: url, max: 2 });
    pool.on("error", () => undefined);
    await pool.query("select 1");
    await dropCellDatabase(adminUrl, namespace, otherCell);
    await pool.end();
    const admin = new pg.Client({ connectionString: adminUrl });
    await admin.connect();
    try {
      const found = await admin.query("select 1 from pg_database where datname = $1", [`${namespace}_cell_${otherCell}`]);
      expect(found.rowCount).toBe(0);
    } finally {
      await admin.end();
    }
  });
});

describe("a send batch racing its conversation's import", () => {
  /**
   * A pool whose send-batch statement is followed, before its result returns, by `between`: so another
   * transaction commits exactly between the statement and whatever the store reads after it.
   */
  function racingPool(pool: pg.Pool): { pool: pg.Pool; between(run: () => Promise<void>): void; ran(): boolean } {
    let pending: (() => Promise<void>) | undefined;
    let ran = false;
    const wrapped = new Proxy(pool, {
      get(target, property) {
        const value: unknown = Reflect.get(target, property, target);
        if (property !== "query" || typeof value !== "function") return typeof value === "function" ? value.bind(target) : value;
        const query = value.bind(target) as (...args: unknown[]) => Promise<unknown>;
        return async (...args: unknown[]): Promise<unknown> => {
          const result = await query(...args);
          const config = args[0];
          const isSendBatch = typeof config === "object" && config !== null && "name" in config && config.name === "cellwire-store-sends";
          if (isSendBatch && pending !== undefined) {
            const run = pending;
            pending = undefined;
            await run();
            ran = true;
          }
          return result;
        };
      },
    });
    return { pool: wrapped, between: (run) => (pending = run), ran: () => ran };
  }

  it("answers a member moving, not not_a_member, when the import activates between the statement and the read of its refusal", async () => {
    const importer = required(second);
    const racing = racingPool(required(pools[0]));
    const store = new PostgresConversationStore(racing.pool, { groupMembersMax });
    const conversationId = "g-racingTheActivation00a";
    const epoch = 5;
    const base = {
      kind: "conversation",
      id: conversationId,
      epoch,
      lastSeq: 0,
      conversation: null,
      members: [],
      messages: [],
      outbox: [],
    } as const;
    const member = (userId: string) => ({ userId, joinedAtMs: Date.now(), joinedAfterSeq: 0, readSeq: 0, deliveredSeq: 0 });
    const imported = await importer.importPage({
      ...base,
      first: true,
      last: false,
      conversation: { kind: "group", title: "moving in", createdByUserId: "alice", createdAtMs: Date.now() },
      members: [member("alice"), member("bob")],
    });
    expect(imported).toEqual({ outcome: "importing" });
    const sends = [
      { conversationId, senderUserId: "alice", senderDeviceId: "phone", clientMessageId: "c-race", body: "at the activation", epoch },
      { conversationId, senderUserId: "mallory", senderDeviceId: "phone", clientMessageId: "c-intruder", body: "let me in", epoch },
    ];
    // The statement sees the conversation importing; the activation commits before the store reads why it refused.
    racing.between(async () => {
      expect(await importer.importPage({ ...base, first: false, last: true })).toEqual({ outcome: "active" });
    });
    const raced = await store.appendMessages(sends);
    expect(racing.ran()).toBe(true);
    // The member was refused for a state that no longer holds: retryable, as the statement would have said.
    expect(raced).toEqual([{ outcome: "moving" }, { outcome: "not_a_member" }]);
    const [retried] = await store.appendMessages(sends.slice(0, 1));
    expect(retried).toMatchObject({ outcome: "stored", deduplicated: false, message: { seq: 1, body: "at the activation" } });
  });
});
