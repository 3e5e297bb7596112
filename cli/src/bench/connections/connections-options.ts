// The connections benchmark's command line, parsed and checked once (node:util parseArgs), so the run
// after it trusts every value. Pure: a bad value comes back as a message for the user, never as an exception.
import { parseArgs } from "node:util";
import { issuerAlgorithms } from "./connections-messages.ts";

export const measurementNames = ["memory", "connects", "kill"] as const;
export type MeasurementName = (typeof measurementNames)[number];

/**
 * How the benchmark's tokens are signed and verified: "dev" is `npm start`'s dev key pair (ES256, the edges
 * in dev mode); an algorithm runs the edges in jwks mode, the production path (the key picked from a JWKS
 * by kid and alg), with a key pair of that algorithm made for the run. Issuers differ: Auth0, Cognito,
 * Firebase and Entra ID sign with RS256, and the algorithm decides much of what a connect costs the edge.
 */
export const tokenModes = ["dev", ...issuerAlgorithms] as const;
export type TokenMode = (typeof tokenModes)[number];

export const usage = `usage: npm run bench:connections -- [options]

  --measurements <list>     which to run, comma separated, in this order: memory, connects, kill (default all)
  --sockets <n>             memory: idle authenticated sessions opened on edge 1, and silent sockets on
                            edge 2 for the uWS baseline (default 5000)
  --connects <n>            connects: users connected to edge 1 as first-time users, then again as
                            returning users (default 10000), after an untimed warm-up of as many more (up to 10000):
                            first-time once, then returning until the machine's CPU per connect settles (2-8 rounds)
  --in-flight <n>           connects: connects in flight per load process (default 50)
  --users <n>               kill: SDK clients synced on edge 1 before it is killed (default 6000)
  --resync-deadline <s>     kill: how long after the kill a client may take to sync again (default 30)
  --load-processes <n>      processes that hold the sockets and clients (default 2; at most
                            5000 sockets or clients each; each one more wakes on the shared cores)
  --tokens <mode>           dev (the dev key pair, ES256, edges in dev mode, as npm start; the default) or
                            ES256, RS256, PS256, EdDSA: edges in jwks mode with a JWKS file of a key pair
                            of that algorithm made for the run, as a production edge verifies
  --results <path>          the markdown report (default bench/results/<yyyy-mm-dd>-connections.md)
  --profile <dir>           CPU profiles of every Cellwire process and load process, in <dir>/<process name>/
                            (edge 1 is SIGKILLed by the kill measurement and leaves none: profile it without kill)
  --heap-snapshots <dir>    memory: heap snapshots of edge 1 before and after its sessions, in <dir>
  --postgres-admin-url <u>  the Postgres server of the cell databases (default ${defaultPostgresAdminUrl()})
`;

export type ConnectionsOptions = {
  readonly measurements: readonly MeasurementName[];
  readonly sockets: number;
  readonly connects: number;
  readonly inFlightPerProcess: number;
  readonly users: number;
  readonly resyncDeadlineS: number;
  readonly loadProcesses: number;
  readonly tokens: TokenMode;
  readonly resultsPath: string;
  readonly profileDirectory: string | undefined;
  readonly heapSnapshotDirectory: string | undefined;
  readonly postgresAdminUrl: string;
};

export type ParsedOptions = { readonly ok: true; readonly options: ConnectionsOptions } | { readonly ok: false; readonly message: string };

export const connectionsLimits = {
  /** Sockets or SDK clients one load process holds: the machine allows 20,000 open files per process. */
  perProcessMax: 5000,
  loadProcessesMax: 8,
  inFlightMax: 1000,
  resyncDeadlineSMax: 600,
} as const;

function defaultPostgresAdminUrl(): string {
  return "postgres://postgres@127.0.0.1:5432/postgres";
}

/** bench/results/<yyyy-mm-dd>-connections.md, dated in local time. */
export function defaultResultsPath(now: Date): string {
  const date = `${now.getFullYear()}-${String(now.getMonth() + 1).padStart(2, "0")}-${String(now.getDate()).padStart(2, "0")}`;
  return `bench/results/${date}-connections.md`;
}

class OptionError extends Error {}

function wholeNumber(name: string, text: string, min: number, max: number): number {
  const value = Number(text);
  if (!/^\d+$/.test(text) || !Number.isSafeInteger(value) || value < min || value > max)
    throw new OptionError(`--${name} takes a whole number from ${min} to ${max}, not ${JSON.stringify(text)}`);
  return value;
}

function parseMeasurements(text: string): MeasurementName[] {
  const names = text.split(",").map((part) => part.trim());
  for (const name of names) {
    if (!(measurementNames as readonly string[]).includes(name))
      throw new OptionError(`--measurements takes ${measurementNames.join(", ")}, not ${JSON.stringify(name)}`);
  }
  if (new Set(names).size !== names.length) throw new OptionError(`--measurements names one twice: ${text}`);
  // Always in the fixed order: kill comes last, since it leaves edge 1 dead.
  return measurementNames.filter((name) => names.includes(name));
}

function tokenMode(text: string): TokenMode {
  const mode = tokenModes.find((candidate) => candidate === text);
  if (mode === undefined) throw new OptionError(`--tokens takes ${tokenModes.join(", ")}, not ${JSON.stringify(text)}`);
  return mode;
}

function postgresUrl(text: string): string {
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    throw new OptionError(`--postgres-admin-url is not a URL: ${JSON.stringify(text)}`);
  }
  if (url.protocol !== "postgres:" && url.protocol !== "postgresql:")
    throw new OptionError(`--postgres-admin-url must be a postgres:// URL, not ${url.protocol}//…`);
  return text;
}

export function parseConnectionsOptions(argv: readonly string[], now: Date = new Date()): ParsedOptions {
  try {
    const { values, positionals } = parseArgs({
      args: [...argv],
      strict: true,
      allowPositionals: true,
      options: {
        measurements: { type: "string", default: measurementNames.join(",") },
        sockets: { type: "string", default: "5000" },
        connects: { type: "string", default: "10000" },
        "in-flight": { type: "string", default: "50" },
        users: { type: "string", default: "6000" },
        "resync-deadline": { type: "string", default: "30" },
        "load-processes": { type: "string", default: "2" },
        tokens: { type: "string", default: "dev" },
        results: { type: "string" },
        profile: { type: "string" },
        "heap-snapshots": { type: "string" },
        "postgres-admin-url": { type: "string", default: defaultPostgresAdminUrl() },
      },
    });
    if (positionals.length > 0) throw new OptionError(`unexpected argument ${JSON.stringify(positionals[0])}`);
    const loadProcesses = wholeNumber("load-processes", values["load-processes"], 1, connectionsLimits.loadProcessesMax);
    const perRunMax = loadProcesses * connectionsLimits.perProcessMax;
    const tooMany = `(at most ${connectionsLimits.perProcessMax} per load process: raise --load-processes)`;
    const sockets = wholeNumber("sockets", values.sockets, 1, Number.MAX_SAFE_INTEGER);
    if (sockets > perRunMax) throw new OptionError(`--sockets ${sockets} is more than ${loadProcesses} load processes hold ${tooMany}`);
    const connects = wholeNumber("connects", values.connects, 1, Number.MAX_SAFE_INTEGER);
    if (connects > perRunMax) throw new OptionError(`--connects ${connects} is more than ${loadProcesses} load processes hold ${tooMany}`);
    const users = wholeNumber("users", values.users, 1, Number.MAX_SAFE_INTEGER);
    if (users > perRunMax) throw new OptionError(`--users ${users} is more than ${loadProcesses} load processes hold ${tooMany}`);
    return {
      ok: true,
      options: {
        measurements: parseMeasurements(values.measurements),
        sockets,
        connects,
        inFlightPerProcess: wholeNumber("in-flight", values["in-flight"], 1, connectionsLimits.inFlightMax),
        users,
        resyncDeadlineS: wholeNumber("resync-deadline", values["resync-deadline"], 1, connectionsLimits.resyncDeadlineSMax),
        loadProcesses,
        tokens: tokenMode(values.tokens),
        resultsPath: values.results ?? defaultResultsPath(now),
        profileDirectory: values.profile,
        heapSnapshotDirectory: values["heap-snapshots"],
        postgresAdminUrl: postgresUrl(values["postgres-admin-url"]),
      },
    };
  } catch (error) {
    if (error instanceof OptionError) return { ok: false, message: error.message };
    // parseArgs throws TypeError with a readable message for unknown or malformed options.
    if (error instanceof TypeError) return { ok: false, message: error.message };
    throw error;
  }
}
