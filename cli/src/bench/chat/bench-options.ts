// The chat benchmark's command line, parsed and checked once (node:util parseArgs), so the run after it
// trusts every value. Pure: a bad value comes back as a message for the user, never as an exception.
import { parseArgs } from "node:util";
import { groupMembersMax } from "@cellwire/protocol";
import { defaultRateGrid, messageBodyHeaderLengthMax } from "./workload.ts";

export const usage = `usage: npm run bench:chat -- --group <n> [options]

  --group <n>               members per conversation: 2 = 1:1 (openDirect), 3..${groupMembersMax} = groups (createGroup)
  --rates <list>            sends/s, comma separated, each run in full (default: the grid 25, 50, 100 … 25,600,
                            stopping after its first failing rate)
  --duration <s>            seconds measured per rate (default 30)
  --warmup <s>              seconds at the same rate before each measured window, not counted (default 5)
  --users <n>               users u0..u{n-1}; those that cannot fill a conversation stay out (default 1000)
  --load-processes <n>      processes that drive the connections (default 2)
  --body-bytes <n>          size of each message body (default 100)
  --peer socketio           also run the workload against the two-node Socket.IO peer, after Cellwire
  --results <path>          the markdown report (default bench/results/<yyyy-mm-dd>-chat-group<n>.md)
  --profile <dir>           CPU profiles of every Cellwire process and load process, in <dir>/<process name>/
  --postgres-admin-url <u>  the Postgres server of the cell databases (default ${defaultPostgresAdminUrl()}); its
                            commits and rows per message are reported (with pg_stat_statements loaded, as in
                            cli/src/bench/private-postgres.ts, statements too)
  --nats-servers <list>     Cellwire's NATS servers (default 127.0.0.1:4222)
  --nats-monitor-url <u>    a nats-server monitoring URL (http://127.0.0.1:8222): NATS messages and bytes per
                            message are reported from its /varz (cli/src/bench/private-nats.ts starts one)
  --keep-going              on the default grid, go on past the first failing rate
`;

export type BenchOptions = {
  readonly group: number;
  readonly rates: readonly number[];
  /** Whether the rates came from --rates (run in full) or are the default grid (stop at its first failure). */
  readonly explicitRates: boolean;
  readonly durationS: number;
  readonly warmupS: number;
  readonly users: number;
  readonly loadProcesses: number;
  readonly bodyBytes: number;
  readonly peer: "socketio" | undefined;
  readonly resultsPath: string;
  readonly profileDirectory: string | undefined;
  readonly postgresAdminUrl: string;
  /** The NATS servers of Cellwire's processes. */
  readonly natsServers: readonly string[];
  /** A nats-server monitoring URL (http://host:port) whose /varz counts the messages of each window. */
  readonly natsMonitorUrl: string | undefined;
  readonly keepGoing: boolean;
};

export type ParsedOptions = { readonly ok: true; readonly options: BenchOptions } | { readonly ok: false; readonly message: string };

const limits = {
  usersMax: 100_000,
  loadProcessesMax: 16,
  rateMax: 1_000_000,
  ratesMax: 50,
  durationSMax: 3600,
  warmupSMax: 600,
  bodyBytesMax: 32 * 1024,
} as const;

function defaultPostgresAdminUrl(): string {
  return "postgres://postgres@127.0.0.1:5432/postgres";
}

/** bench/results/<yyyy-mm-dd>-chat-group<n>.md, dated in local time. */
export function defaultResultsPath(group: number, now: Date): string {
  const date = `${now.getFullYear()}-${String(now.getMonth() + 1).padStart(2, "0")}-${String(now.getDate()).padStart(2, "0")}`;
  return `bench/results/${date}-chat-group${group}.md`;
}

class OptionError extends Error {}

function wholeNumber(name: string, text: string, min: number, max: number): number {
  const value = Number(text);
  if (!/^\d+$/.test(text) || !Number.isSafeInteger(value) || value < min || value > max)
    throw new OptionError(`--${name} takes a whole number from ${min} to ${max}, not ${JSON.stringify(text)}`);
  return value;
}

function seconds(name: string, text: string, min: number, max: number, exclusiveMin: boolean): number {
  const value = Number(text);
  const low = exclusiveMin ? value <= min : value < min;
  if (!/^\d+(\.\d+)?$/.test(text) || !Number.isFinite(value) || low || value > max) {
    throw new OptionError(`--${name} takes seconds ${exclusiveMin ? "above" : "from"} ${min} to ${max}, not ${JSON.stringify(text)}`);
  }
  return value;
}

function parseRates(text: string): number[] {
  const parts = text.split(",").map((part) => part.trim());
  if (parts.length > limits.ratesMax) throw new OptionError(`--rates takes at most ${limits.ratesMax} rates`);
  const rates = parts.map((part) => {
    const rate = Number(part);
    if (!/^\d+(\.\d+)?$/.test(part) || !(rate > 0) || rate > limits.rateMax)
      throw new OptionError(`--rates takes sends per second above 0 and up to ${limits.rateMax}, not ${JSON.stringify(part)}`);
    return rate;
  });
  for (let index = 1; index < rates.length; index++) {
    if ((rates[index] ?? 0) <= (rates[index - 1] ?? 0))
      throw new OptionError(`--rates must rise from one rate to the next (the knee reads them in order): ${text}`);
  }
  return rates;
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

function natsServerList(text: string): string[] {
  const servers = text
    .split(",")
    .map((server) => server.trim())
    .filter((server) => server !== "");
  if (servers.length === 0 || servers.some((server) => !/^[A-Za-z0-9.-]+:[0-9]{1,5}$/.test(server))) {
    throw new OptionError(`--nats-servers takes host:port[,host:port…], not ${JSON.stringify(text)}`);
  }
  return servers;
}

function monitorUrl(text: string): string {
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    throw new OptionError(`--nats-monitor-url is not a URL: ${JSON.stringify(text)}`);
  }
  if (url.protocol !== "http:") throw new OptionError("--nats-monitor-url must be an http:// URL (nats-server's -m port)");
  return url.toString().replace(/\/$/, "");
}

export function parseBenchOptions(argv: readonly string[], now: Date = new Date()): ParsedOptions {
  try {
    const { values, positionals } = parseArgs({
      args: [...argv],
      strict: true,
      allowPositionals: true,
      options: {
        group: { type: "string" },
        rates: { type: "string" },
        duration: { type: "string", default: "30" },
        warmup: { type: "string", default: "5" },
        users: { type: "string", default: "1000" },
        "load-processes": { type: "string", default: "2" },
        "body-bytes": { type: "string", default: "100" },
        peer: { type: "string" },
        results: { type: "string" },
        profile: { type: "string" },
        "postgres-admin-url": { type: "string", default: defaultPostgresAdminUrl() },
        "nats-servers": { type: "string", default: "127.0.0.1:4222" },
        "nats-monitor-url": { type: "string" },
        "keep-going": { type: "boolean", default: false },
      },
    });
    if (positionals.length > 0) throw new OptionError(`unexpected argument ${JSON.stringify(positionals[0])}`);
    if (values.group === undefined) throw new OptionError("--group is required");
    const group = wholeNumber("group", values.group, 2, groupMembersMax);
    const users = wholeNumber("users", values.users, group, limits.usersMax);
    const loadProcesses = wholeNumber("load-processes", values["load-processes"], 1, limits.loadProcessesMax);
    const usersInConversations = Math.floor(users / group) * group;
    // User i goes to process i % n: a process past the last user would have no one to send as.
    if (loadProcesses > usersInConversations)
      throw new OptionError(`--load-processes ${loadProcesses} is more than the ${usersInConversations} users in conversations`);
    if (values.peer !== undefined && values.peer !== "socketio")
      throw new OptionError(`--peer takes socketio, not ${JSON.stringify(values.peer)}`);
    if (values.profile === "") throw new OptionError("--profile takes a directory");
    if (values.results === "") throw new OptionError("--results takes a file path");
    return {
      ok: true,
      options: {
        group,
        rates: values.rates === undefined ? defaultRateGrid() : parseRates(values.rates),
        explicitRates: values.rates !== undefined,
        durationS: seconds("duration", values.duration, 0, limits.durationSMax, true),
        warmupS: seconds("warmup", values.warmup, 0, limits.warmupSMax, false),
        users,
        loadProcesses,
        // The header (key and intended time) must fit: a smaller body would not be the size asked for.
        bodyBytes: wholeNumber("body-bytes", values["body-bytes"], messageBodyHeaderLengthMax, limits.bodyBytesMax),
        peer: values.peer,
        resultsPath: values.results ?? defaultResultsPath(group, now),
        profileDirectory: values.profile,
        postgresAdminUrl: postgresUrl(values["postgres-admin-url"]),
        natsServers: natsServerList(values["nats-servers"]),
        natsMonitorUrl: values["nats-monitor-url"] === undefined ? undefined : monitorUrl(values["nats-monitor-url"]),
        keepGoing: values["keep-going"],
      },
    };
  } catch (error) {
    // parseArgs throws TypeErrors with a code for unknown or malformed options: the user's mistake too.
    if (
      error instanceof OptionError ||
      (error instanceof TypeError && "code" in error && typeof error.code === "string" && error.code.startsWith("ERR_PARSE_ARGS"))
    ) {
      return { ok: false, message: error.message };
    }
    throw error;
  }
}
