import { randomBytes } from "node:crypto";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { dropCellDatabase, ensureCellDatabase } from "./database.ts";
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
  first = new PostgresConversationStore(firstPool, { groupMembersMax });
  second = new PostgresConversationStore(secondPool, { groupMembersMax });
});

afterAll(async () => {
  await Promise.all(pools.map((pool) => pool.end()));
  await dropCellDatabase(adminUrl, namespace, cellId);
});

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
  it("is idempotent and records one applied migration", async () => {
    await ensureCellDatabase(adminUrl, namespace, cellId);
    const client = new pg.Client({ connectionString: databaseUrl });
    await client.connect();
    try {
      const applied = await client.query("select count(*)::int as count from drizzle.__drizzle_migrations");
      expect(applied.rows[0]).toEqual({ count: 1 });
    } finally {
      await client.end();
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
