import { randomBytes } from "node:crypto";
import { copyFile, mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import pg from "pg";
import { messageOf } from "@cellwire/protocol";
import { drizzle } from "drizzle-orm/node-postgres";
import { migrate } from "drizzle-orm/node-postgres/migrator";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { databaseUrl as cellDatabaseUrl, dropCellDatabase, ensureCellDatabase, migrationsFolder } from "./database.ts";
import { PostgresConversationStore } from "./postgres-store.ts";
import { registerStoreContract } from "./store-contract.ts";

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

  it("moves a database of the first schema forward, keeping its data, and appends with outbox rows after", async () => {
    const oldCell = "old";
    const folder = await mkdtemp(join(tmpdir(), "cells-migrations-"));
    const url = cellDatabaseUrl(adminUrl, `${namespace}_cell_${oldCell}`);
    const admin = new pg.Client({ connectionString: adminUrl });
    await admin.connect();
    try {
      // The first migration alone, as a worker of the previous version applied it.
      const journal = await migrationJournal();
      const first = journal.entries[0];
      if (first === undefined) throw new Error("no migration");
      await mkdir(join(folder, "meta"));
      await copyFile(join(migrationsFolder, `${first.tag}.sql`), join(folder, `${first.tag}.sql`));
      await writeFile(join(folder, "meta", "_journal.json"), JSON.stringify({ ...journal, entries: [first] }));
      await admin.query(`create database "${namespace}_cell_${oldCell}"`);
      const client = new pg.Client({ connectionString: url });
      await client.connect();
      try {
        await migrate(drizzle({ client }), { migrationsFolder: folder });
        await client.query("insert into conversations (id, kind, title, created_by_user_id, last_seq) values ('g-0000000000000000000old', 'group', 't', 'alice', 1)");
        await client.query("insert into conversation_members (conversation_id, user_id) values ('g-0000000000000000000old', 'alice'), ('g-0000000000000000000old', 'bob')");
        await client.query(
          "insert into messages (conversation_id, seq, message_id, sender_user_id, sender_device_id, client_message_id, body) values ('g-0000000000000000000old', 1, 'm-old', 'alice', 'phone', 'c-old', 'before')",
        );
      } finally {
        await client.end();
      }

      await ensureCellDatabase(adminUrl, namespace, oldCell);
      const pool = new pg.Pool({ connectionString: url, max: 2 });
      pool.on("error", () => undefined);
      try {
        const store = new PostgresConversationStore(pool);
        const history = await store.history({ conversationId: "g-0000000000000000000old", userId: "bob", beforeSeq: null, limit: 10 });
        expect(history.outcome === "history" && history.messages.map((message) => message.body)).toEqual(["before"]);
        const sent = await store.appendMessage({
          conversationId: "g-0000000000000000000old",
          senderUserId: "bob",
          senderDeviceId: "phone",
          clientMessageId: "c-new",
          body: "after",
          epoch: 1,
        });
        expect(sent.outcome === "stored" && sent.outbox.map((entry) => `${messageOf(entry.event)?.seq}:${entry.recipientUserId}`)).toEqual([
          "2:alice",
          "2:bob",
        ]);
      } finally {
        await pool.end();
      }
    } finally {
      await admin.end();
      await rm(folder, { recursive: true, force: true });
      await dropCellDatabase(adminUrl, namespace, oldCell);
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
