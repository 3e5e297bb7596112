// Creates a cell's database when it is missing and brings its schema up to date. Every worker of a cell
// runs this at start, often at the same moment, so both steps tolerate a concurrent twin.
import { fileURLToPath } from "node:url";
import pg from "pg";
import { drizzle } from "drizzle-orm/node-postgres";
import { migrate } from "drizzle-orm/node-postgres/migrator";
import { cellDatabaseName } from "@cellwire/protocol";
import { CellwireError } from "@cellwire/cluster";
import { PostgresUnavailableError, duplicateDatabase, isPostgresUnavailable, postgresErrorCode, uniqueViolation } from "./errors.ts";

export const defaultPostgresAdminUrl = "postgres://postgres@127.0.0.1:5432/postgres";

/** Resolved from this module, not the working directory, so any launcher finds the migrations. */
export const migrationsFolder = fileURLToPath(new URL("../../drizzle/", import.meta.url));

/** Session-level advisory lock key (any constant 64-bit value) held while one worker migrates. */
const migrationLockKey = 0x63656c6c_7769n; // "cellwi"

/**
 * Held on the admin database while one worker creates a cell's database, so that its twin waits and finds
 * it instead of failing a CREATE DATABASE, which the server logs as an ERROR at every cell's first start.
 */
const creationLockKey = 0x63656c6c_6372n; // "cellcr"

const connectTimeoutMs = 5000;

/** Per-database settings (ALTER DATABASE … SET), applied at every worker start so new ones reach old databases. */
export const cellDatabaseSettings: readonly string[] = ["jit = off", "synchronous_commit = on"];

/** The bounds on every wait of a worker's connections (WORKER_POSTGRES_* settings, config.ts). */
export type PostgresTimeouts = {
  /** How long taking a new connection may take (pg connectionTimeoutMillis). */
  readonly connectTimeoutMs: number;
  /** Postgres cancels a statement running longer (statement_timeout). */
  readonly statementTimeoutMs: number;
  /** Postgres cancels a statement waiting longer for a lock (lock_timeout). */
  readonly lockTimeoutMs: number;
  /** Postgres ends a session idle inside a transaction for longer (idle_in_transaction_session_timeout). */
  readonly idleInTransactionTimeoutMs: number;
  /** The client stops waiting for a query's answer after this long and discards the connection (pg query_timeout). */
  readonly queryTimeoutMs: number;
  /** Idle time before the first TCP keepalive probe of a connection (pg keepAliveInitialDelayMillis). */
  readonly keepAliveInitialDelayMs: number;
};

/**
 * The pool settings of a worker's connections to its cell database: every wait bounded. The server-side
 * timeouts end a slow statement, a lock wait or a forgotten transaction on a live network; only the
 * client's query timeout ends a wait on a silent one (node-postgres then discards the connection), and
 * TCP keepalive lets the kernel notice a peer that vanished from an idle connection (docs/decisions/0019).
 */
export function cellPoolConfig(connectionString: string, max: number, timeouts: PostgresTimeouts, options?: string): pg.PoolConfig {
  return {
    connectionString,
    max,
    connectionTimeoutMillis: timeouts.connectTimeoutMs,
    statement_timeout: timeouts.statementTimeoutMs,
    lock_timeout: timeouts.lockTimeoutMs,
    idle_in_transaction_session_timeout: timeouts.idleInTransactionTimeoutMs,
    query_timeout: timeouts.queryTimeoutMs,
    keepAlive: true,
    keepAliveInitialDelayMillis: timeouts.keepAliveInitialDelayMs,
    ...(options === undefined ? {} : { options }),
  };
}

/** The URL of database `databaseName` on the server of `adminUrl` (same credentials and options). */
export function databaseUrl(adminUrl: string, databaseName: string): string {
  const url = new URL(adminUrl);
  url.pathname = `/${encodeURIComponent(databaseName)}`;
  return url.toString();
}

/** The URL without its password, for messages and logs. */
export function redactUrl(url: string): string {
  try {
    const parsed = new URL(url);
    if (parsed.password !== "") parsed.password = "***";
    return parsed.toString();
  } catch {
    return "(unparsable URL)";
  }
}

/**
 * Creates the database of (namespace, cellId) if missing and applies the migrations; returns its URL.
 * Throws PostgresUnavailableError, naming the server and how to start it, when Postgres cannot be reached.
 */
export async function ensureCellDatabase(adminUrl: string, namespace: string, cellId: string): Promise<string> {
  const name = cellDatabaseName(namespace, cellId);
  await withClient(adminUrl, (client) =>
    withAdvisoryLock(client, creationLockKey, async () => {
      const found = await client.query("select 1 from pg_database where datname = $1", [name]);
      if (found.rowCount !== 0) return;
      try {
        // The name passed cellDatabaseName's allowlist ([a-z0-9_]), so quoting it is enough.
        await client.query(`create database "${name}"`);
      } catch (error) {
        // A creator that does not take the lock (an older worker) was first: 42P04, or 23505 when both
        // inserted into pg_database at once.
        const code = postgresErrorCode(error);
        if (code !== duplicateDatabase && code !== uniqueViolation) throw error;
      }
    }),
  );
  const url = databaseUrl(adminUrl, name);
  await withClient(url, (client) =>
    withAdvisoryLock(client, migrationLockKey, async () => {
      await migrate(drizzle({ client }), { migrationsFolder });
      // Settings of the cell's database, for every connection to it (they apply from the next session);
      // under the lock because two concurrent ALTERs of one database fail ("tuple concurrently updated").
      // The send statement (postgres-sends.ts) of a large batch has a plan cost past the JIT threshold:
      // compiling it costs tens of milliseconds, running it well under one. Commits stay synchronous: an
      // ack means durable.
      for (const setting of cellDatabaseSettings) await client.query(`alter database "${name}" set ${setting}`);
    }),
  );
  return url;
}

/**
 * Runs `body` holding a session-level advisory lock of the client's database. The unlock is best-effort:
 * the lock goes with the session too, which withClient ends, and an unlock that fails (the connection
 * lost) must not hide why `body` failed.
 */
async function withAdvisoryLock<T>(client: pg.Client, key: bigint, body: () => Promise<T>): Promise<T> {
  await client.query("select pg_advisory_lock($1)", [key.toString()]);
  try {
    return await body();
  } finally {
    await client.query("select pg_advisory_unlock($1)", [key.toString()]).catch(() => undefined);
  }
}

/** Drops the database of (namespace, cellId), disconnecting its sessions first (tests and cleanup). */
export async function dropCellDatabase(adminUrl: string, namespace: string, cellId: string): Promise<void> {
  const name = cellDatabaseName(namespace, cellId);
  await withClient(adminUrl, async (client) => {
    await client.query("select pg_terminate_backend(pid) from pg_stat_activity where datname = $1 and pid <> pg_backend_pid()", [name]);
    // WITH (FORCE) also ends sessions that connected after the terminate above (a pool reconnecting).
    await client.query(`drop database if exists "${name}" with (force)`);
  });
}

async function withClient<T>(url: string, use: (client: pg.Client) => Promise<T>): Promise<T> {
  const client = new pg.Client({ connectionString: url, connectionTimeoutMillis: connectTimeoutMs });
  // An idle client whose server goes away emits 'error'; without a listener that would crash the process.
  client.on("error", () => undefined);
  try {
    await client.connect();
  } catch (error) {
    if (isPostgresUnavailable(error)) throw unreachable(url, error);
    const reason = error instanceof Error ? error.message : String(error);
    throw new CellwireError("internal", `Postgres at ${redactUrl(url)} refused the connection: ${reason}`, { cause: error });
  }
  try {
    return await use(client);
  } catch (error) {
    throw isPostgresUnavailable(error) ? unreachable(url, error) : error;
  } finally {
    await client.end().catch(() => undefined);
  }
}

function unreachable(url: string, cause: unknown): PostgresUnavailableError {
  const reason = cause instanceof Error ? cause.message : String(cause);
  return new PostgresUnavailableError(
    `cannot reach Postgres at ${redactUrl(url)} (${reason}). Is it running? ` +
      "Locally: pg_ctlcluster --skip-systemctl-redirect 15 main start",
    { cause },
  );
}
