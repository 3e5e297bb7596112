// What a window cost the services, counted by the services themselves: Postgres commits and rows of the
// run's cell databases (pg_stat_database), its statements when pg_stat_statements is loaded, and NATS
// messages and bytes when a monitoring URL is given (/varz). Sampled at a window's start and end; the
// differences divided by the acked messages are the per-message budget of docs/performance.md. Counters of
// other databases and other clients of the same servers count too: run on servers of its own (the
// private-postgres and private-nats scripts) for a clean budget.
import pg from "pg";
import { cellDatabaseName } from "@cellwire/protocol";

export type CounterSample = {
  readonly postgres: {
    readonly commits: number;
    readonly inserted: number;
    readonly updated: number;
    readonly deleted: number;
    readonly statements: number | null;
  };
  readonly nats: { readonly inMsgs: number; readonly outMsgs: number; readonly inBytes: number; readonly outBytes: number } | null;
};

/** Per acked message over one window; null where nothing was counted. */
export type ServiceBudget = {
  readonly postgresCommits: number;
  readonly postgresRowsInserted: number;
  readonly postgresRowsUpdated: number;
  readonly postgresRowsDeleted: number;
  /** Statements executed (pg_stat_statements' calls), when the server has the extension. */
  readonly postgresStatements: number | null;
  /** Messages into and out of nats-server (a request counts in once and out once per receiver), and bytes. */
  readonly natsMessagesIn: number | null;
  readonly natsMessagesOut: number | null;
  readonly natsBytes: number | null;
};

export type CounterSource = {
  readonly postgresAdminUrl: string;
  readonly namespace: string;
  readonly cellIds: readonly string[];
  readonly natsMonitorUrl: string | undefined;
};

function integerOf(value: unknown): number {
  const number = typeof value === "number" ? value : typeof value === "string" ? Number(value) : Number.NaN;
  return Number.isFinite(number) ? number : 0;
}

async function samplePostgres(source: CounterSource): Promise<CounterSample["postgres"]> {
  const client = new pg.Client({ connectionString: source.postgresAdminUrl });
  await client.connect();
  try {
    const names = source.cellIds.map((cellId) => cellDatabaseName(source.namespace, cellId));
    const stats = await client.query<Record<string, unknown>>(
      `select coalesce(sum(xact_commit), 0) as commits, coalesce(sum(tup_inserted), 0) as inserted,
              coalesce(sum(tup_updated), 0) as updated, coalesce(sum(tup_deleted), 0) as deleted
       from pg_stat_database where datname = any($1::text[])`,
      [names],
    );
    const row = stats.rows[0] ?? {};
    let statements: number | null = null;
    // Asked first rather than caught: a query on a missing view is an ERROR in the server's log, twice per
    // rate, on the machine's server that has no pg_stat_statements (as it is found).
    const loaded = await client.query<Record<string, unknown>>("select to_regclass('pg_stat_statements') is not null as loaded");
    if (loaded.rows[0]?.["loaded"] === true) {
      try {
        const counted = await client.query<Record<string, unknown>>(
          `select coalesce(sum(calls), 0) as calls from pg_stat_statements
           where dbid in (select oid from pg_database where datname = any($1::text[]))`,
          [names],
        );
        statements = integerOf(counted.rows[0]?.["calls"]);
      } catch {
        // The view without its library in shared_preload_libraries: statements are not counted.
      }
    }
    return {
      commits: integerOf(row["commits"]),
      inserted: integerOf(row["inserted"]),
      updated: integerOf(row["updated"]),
      deleted: integerOf(row["deleted"]),
      statements,
    };
  } finally {
    await client.end();
  }
}

async function sampleNats(monitorUrl: string): Promise<CounterSample["nats"]> {
  const response = await fetch(`${monitorUrl}/varz`, { signal: AbortSignal.timeout(2000) });
  if (!response.ok) throw new Error(`${monitorUrl}/varz answered ${response.status}`);
  const body: unknown = await response.json();
  const varz = typeof body === "object" && body !== null ? (body as Record<string, unknown>) : {};
  return {
    inMsgs: integerOf(varz["in_msgs"]),
    outMsgs: integerOf(varz["out_msgs"]),
    inBytes: integerOf(varz["in_bytes"]),
    outBytes: integerOf(varz["out_bytes"]),
  };
}

export async function sampleCounters(source: CounterSource): Promise<CounterSample> {
  const [postgres, nats] = await Promise.all([
    samplePostgres(source),
    source.natsMonitorUrl === undefined ? Promise.resolve(null) : sampleNats(source.natsMonitorUrl),
  ]);
  return { postgres, nats };
}

export function budgetBetween(start: CounterSample, end: CounterSample, acked: number): ServiceBudget | null {
  if (acked === 0) return null;
  const per = (value: number): number => Math.round((value / acked) * 1000) / 1000;
  const statements =
    start.postgres.statements === null || end.postgres.statements === null
      ? null
      : per(end.postgres.statements - start.postgres.statements);
  const nats = start.nats !== null && end.nats !== null ? { start: start.nats, end: end.nats } : null;
  return {
    postgresCommits: per(end.postgres.commits - start.postgres.commits),
    postgresRowsInserted: per(end.postgres.inserted - start.postgres.inserted),
    postgresRowsUpdated: per(end.postgres.updated - start.postgres.updated),
    postgresRowsDeleted: per(end.postgres.deleted - start.postgres.deleted),
    postgresStatements: statements,
    natsMessagesIn: nats === null ? null : per(nats.end.inMsgs - nats.start.inMsgs),
    natsMessagesOut: nats === null ? null : per(nats.end.outMsgs - nats.start.outMsgs),
    natsBytes: nats === null ? null : Math.round((nats.end.inBytes - nats.start.inBytes + nats.end.outBytes - nats.start.outBytes) / acked),
  };
}
