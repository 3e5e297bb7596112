// A private PostgreSQL for profiling the benchmarks (docs/performance.md): the machine's server stays as
// it was found, so statement statistics come from a throwaway cluster with pg_stat_statements loaded.
//
//   npx tsx cli/src/bench/private-postgres.ts start [--port 5499]   # runs until Ctrl-C, then removes it
//   npx tsx cli/src/bench/private-postgres.ts reset  --url postgres://postgres@127.0.0.1:5499/postgres
//   npx tsx cli/src/bench/private-postgres.ts report --url postgres://postgres@127.0.0.1:5499/postgres [--per <count>]
//
// Then run a benchmark against it: `npm run bench:chat -- … --postgres-admin-url <url>`. `report --per N`
// divides calls, rows and time by N (the messages of the run) to print a per-message budget.
import { spawn, spawnSync } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import pg from "pg";

const { values, positionals } = parseArgs({
  allowPositionals: true,
  options: { port: { type: "string", default: "5499" }, url: { type: "string" }, per: { type: "string" } },
});
const command = positionals[0];
const binaries = "/usr/lib/postgresql/15/bin";

async function start(port: number): Promise<void> {
  const directory = mkdtempSync(join(tmpdir(), "cellwire-pg-"));
  // initdb and postgres refuse to run as root: the cluster belongs to the machine's postgres user.
  const asPostgres = (args: string[]) => spawnSync("runuser", ["-u", "postgres", "--", ...args], { stdio: "inherit" });
  spawnSync("chown", ["postgres:postgres", directory]);
  if (asPostgres([`${binaries}/initdb`, "-D", join(directory, "data"), "-U", "postgres", "--auth=trust", "-E", "UTF8"]).status !== 0) {
    throw new Error("initdb failed");
  }
  const server = spawn(
    "runuser",
    [
      "-u",
      "postgres",
      "--",
      `${binaries}/postgres`,
      "-D",
      join(directory, "data"),
      "-p",
      String(port),
      "-k",
      directory,
      "-c",
      "listen_addresses=127.0.0.1",
      "-c",
      "shared_preload_libraries=pg_stat_statements",
      "-c",
      "pg_stat_statements.track=all",
      "-c",
      "pg_stat_statements.track_planning=on",
      "-c",
      "max_connections=200",
    ],
    { stdio: "inherit" },
  );
  const url = `postgres://postgres@127.0.0.1:${port}/postgres`;
  for (let attempt = 0; ; attempt++) {
    const client = new pg.Client({ connectionString: url });
    try {
      await client.connect();
      await client.query("create extension if not exists pg_stat_statements");
      await client.end();
      break;
    } catch (error) {
      await client.end().catch(() => undefined);
      if (attempt > 50) throw error;
      await new Promise((resolve) => setTimeout(resolve, 200));
    }
  }
  process.stdout.write(`private Postgres with pg_stat_statements at ${url} (data in ${directory}); Ctrl-C stops and removes it\n`);
  const stop = (): void => {
    // runuser passes SIGTERM on to Postgres (a smart shutdown once the benchmark's clients are gone) but not
    // SIGINT: with SIGINT the server outlived this script and its data directory.
    server.kill("SIGTERM");
  };
  process.on("SIGINT", stop);
  process.on("SIGTERM", stop);
  await new Promise<void>((resolve) => server.once("exit", () => resolve()));
  rmSync(directory, { recursive: true, force: true });
  process.stdout.write("stopped and removed\n");
}

async function withClient<T>(url: string, use: (client: pg.Client) => Promise<T>): Promise<T> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    return await use(client);
  } finally {
    await client.end();
  }
}

async function report(url: string, per: number): Promise<void> {
  await withClient(url, async (client) => {
    const databases = await client.query<{
      datname: string;
      xact_commit: string;
      tup_inserted: string;
      tup_updated: string;
      tup_deleted: string;
    }>(
      "select datname, xact_commit, tup_inserted, tup_updated, tup_deleted from pg_stat_database where datname like '%_cell_%' order by datname",
    );
    process.stdout.write(`per ${per === 1 ? "run" : `message (÷ ${per})`}:\n`);
    for (const row of databases.rows) {
      const each = (value: string): string => (Number(value) / per).toFixed(per === 1 ? 0 : 3);
      process.stdout.write(
        `  ${row.datname}: commits ${each(row.xact_commit)}, rows inserted ${each(row.tup_inserted)}, updated ${each(row.tup_updated)}, deleted ${each(row.tup_deleted)}\n`,
      );
    }
    const statements = await client.query<{ query: string; calls: string; rows: string; total_exec_time: number; mean_exec_time: number }>(
      // Every database of the private server (a bench drops its cell databases when it ends, their
      // statements stay counted here until a reset).
      `select query, calls, rows, total_exec_time, mean_exec_time from pg_stat_statements
       order by total_exec_time desc limit 15`,
    );
    process.stdout.write("statements by total execution time:\n");
    for (const row of statements.rows) {
      const calls = Number(row.calls) / per;
      process.stdout.write(
        `  ${row.total_exec_time.toFixed(0).padStart(8)} ms total, ${calls.toFixed(per === 1 ? 0 : 3)} calls, ${(Number(row.rows) / per).toFixed(per === 1 ? 0 : 3)} rows, ` +
          `${(row.mean_exec_time * 1000).toFixed(0)} µs mean: ${row.query.replace(/\s+/g, " ").slice(0, 140)}\n`,
      );
    }
  });
}

switch (command) {
  case "start":
    await start(Number(values.port));
    break;
  case "reset":
    if (values.url === undefined) throw new Error("reset needs --url");
    await withClient(values.url, async (client) => {
      // Statement statistics only: a run's cell databases are new, so their pg_stat_database counters
      // start with the run (its set-up included).
      await client.query("select pg_stat_statements_reset()");
    });
    break;
  case "report":
    if (values.url === undefined) throw new Error("report needs --url");
    await report(values.url, values.per === undefined ? 1 : Number(values.per));
    break;
  default:
    throw new Error("usage: private-postgres.ts start [--port N] | reset --url U | report --url U [--per N]");
}
