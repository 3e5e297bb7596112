// The IPC messages between the connections benchmark's coordinator (main.ts) and its load processes
// (connections-load-process.ts), with their decoders: what arrives over IPC is unknown input, like any
// other. Every command carries an `id` and its reply the same id; a process runs one command at a time, in
// order. Two messages come unasked: `ready` once the process has loaded, `failed` when it cannot go on.
//
// A load process holds two kinds of connection:
// - sockets: raw `ws` WebSockets, either silent (no hello: the uWS baseline) or minimal sessions (a
//   protocol 2 hello with a pre-signed token, then nothing but waiting for `synced`), so that the load
//   side stays light next to the edge it measures;
// - clients: CellwireClient (the SDK) with every edge URL, for the edge kill.
import {
  array,
  boolean,
  decode,
  integer,
  literal,
  nullable,
  object,
  oneOf,
  optional,
  string,
  taggedUnion,
  userId as userIdDecoder,
  type DecodeResult,
  type Decoder,
} from "@cellwire/protocol";

/** Limits that keep a wrong message from exhausting memory; each is far above what a run uses. */
export const connectionsLoadLimits = {
  /** Sockets (or clients) of one load process: the machine allows 20,000 open files per process. */
  connectionsPerProcessMax: 15_000,
  inFlightMax: 10_000,
  serverUrlsMax: 16,
  textLengthMax: 4096,
  encodedHistogramLengthMax: 1_000_000,
} as const;

const commandId = integer({ min: 0, max: Number.MAX_SAFE_INTEGER });
const count = integer({ min: 0, max: Number.MAX_SAFE_INTEGER });
const inFlight = integer({ min: 1, max: connectionsLoadLimits.inFlightMax });
const shortText = string({ maxLength: connectionsLoadLimits.textLengthMax });
const url = string({ minLength: 1, maxLength: 2048, pattern: /^wss?:\/\// });
const wallTimeUs = integer({ min: 0, max: Number.MAX_SAFE_INTEGER });
const deadlineMs = integer({ min: 1, max: 600_000 });
const deviceId = string({ minLength: 1, maxLength: 64, pattern: /^[A-Za-z0-9_-]+$/ });
const encodedHistogram = string({ minLength: 1, maxLength: connectionsLoadLimits.encodedHistogramLengthMax });

// ---------------------------------------------------------------------------------------------------
// Commands: coordinator → load process

/** The signature algorithms a run's own issuer may use: those a production edge's JWKS takes, but RS512 and ES384. */
export const issuerAlgorithms = ["ES256", "RS256", "PS256", "EdDSA"] as const;
export type IssuerAlgorithm = (typeof issuerAlgorithms)[number];

/** The run's own issuer (--tokens <algorithm>): its private key, and what its tokens say. */
export type IssuerKey = {
  readonly algorithm: IssuerAlgorithm;
  /** The private key, PKCS #8 PEM. */
  readonly privateKeyPem: string;
  readonly kid: string;
  readonly issuer: string;
  readonly audience: string;
};
/**
 * Replaces the process's users and signs a token for each (before anything is measured): with the run's
 * issuer key when there is one, with the dev key otherwise.
 */
export type PrepareCommand = {
  readonly type: "prepare";
  readonly id: number;
  readonly userIds: readonly string[];
  readonly deviceId: string;
  readonly issuerKey?: IssuerKey | undefined;
};
/** Opens `count` sockets that never say hello (the uWS baseline). */
export type OpenSilentCommand = {
  readonly type: "openSilent";
  readonly id: number;
  readonly url: string;
  readonly count: number;
  readonly inFlightMax: number;
};
/**
 * Opens a minimal session per prepared user, at most inFlightMax connecting at once, and keeps each open
 * once synced. `resume`: the hello carries the mailbox seq of the user's previous `synced` (a returning
 * device); otherwise none (a new device, live at the head).
 */
export type OpenSessionsCommand = {
  readonly type: "openSessions";
  readonly id: number;
  readonly url: string;
  readonly inFlightMax: number;
  readonly resume: boolean;
};
/** How many of the process's sockets are open now. */
export type CensusCommand = { readonly type: "census"; readonly id: number };
/** Closes every socket (1000) and waits for each close, up to the deadline. */
export type CloseSocketsCommand = { readonly type: "closeSockets"; readonly id: number; readonly deadlineMs: number };
/** Starts an SDK client per prepared user with these URLs (first one first) and waits until each is synced. */
export type OpenClientsCommand = {
  readonly type: "openClients";
  readonly id: number;
  readonly urls: readonly string[];
  readonly inFlightMax: number;
  readonly deadlineMs: number;
};
/**
 * Waits until every client has had a `synced` after sinceUs on a URL other than lostUrl, or the deadline;
 * answers each client's delay from sinceUs.
 */
export type AwaitResyncCommand = {
  readonly type: "awaitResync";
  readonly id: number;
  readonly sinceUs: number;
  readonly lostUrl: string;
  readonly deadlineMs: number;
};
export type CloseClientsCommand = { readonly type: "closeClients"; readonly id: number };

export type ConnectionsCommand =
  | PrepareCommand
  | OpenSilentCommand
  | OpenSessionsCommand
  | CensusCommand
  | CloseSocketsCommand
  | OpenClientsCommand
  | AwaitResyncCommand
  | CloseClientsCommand;

export const connectionsCommandDecoder: Decoder<ConnectionsCommand> = taggedUnion<ConnectionsCommand>({
  prepare: object({
    type: literal("prepare"),
    id: commandId,
    userIds: array(userIdDecoder, { maxItems: connectionsLoadLimits.connectionsPerProcessMax }),
    deviceId,
    issuerKey: optional(
      object({
        algorithm: oneOf(issuerAlgorithms),
        privateKeyPem: string({ minLength: 1, maxLength: 16_384 }),
        kid: shortText,
        issuer: shortText,
        audience: shortText,
      }),
    ),
  }),
  openSilent: object({
    type: literal("openSilent"),
    id: commandId,
    url,
    count: integer({ min: 0, max: connectionsLoadLimits.connectionsPerProcessMax }),
    inFlightMax: inFlight,
  }),
  openSessions: object({ type: literal("openSessions"), id: commandId, url, inFlightMax: inFlight, resume: boolean }),
  census: object({ type: literal("census"), id: commandId }),
  closeSockets: object({ type: literal("closeSockets"), id: commandId, deadlineMs }),
  openClients: object({
    type: literal("openClients"),
    id: commandId,
    urls: array(url, { minItems: 1, maxItems: connectionsLoadLimits.serverUrlsMax }),
    inFlightMax: inFlight,
    deadlineMs,
  }),
  awaitResync: object({ type: literal("awaitResync"), id: commandId, sinceUs: wallTimeUs, lostUrl: url, deadlineMs }),
  closeClients: object({ type: literal("closeClients"), id: commandId }),
});

// ---------------------------------------------------------------------------------------------------
// Replies: load process → coordinator

/** What went wrong with some of a batch of operations: how many, and the first reason. */
export type Failures = { readonly failed: number; readonly firstError: string | null };

export type SessionsOpened = {
  readonly opened: number;
  /** Wall-clock µs of the first socket requested and of the last session synced (or failed). */
  readonly startedAtUs: number;
  readonly finishedAtUs: number;
  /** From the socket requested to welcome, and to synced, in µs (latency-histogram.ts, encoded). */
  readonly welcomeHistogram: string;
  readonly syncedHistogram: string;
};

export type ResyncReport = {
  /** Per client, ms from sinceUs to its first `synced` on another URL; NaN when none came by the deadline. */
  readonly delaysMs: Float64Array;
  /**
   * Per client, ms from sinceUs to its first connection attempt after it (the SDK's jittered reconnect
   * delay, plus the time to notice the loss); NaN when it made none by the deadline.
   */
  readonly reconnectDelaysMs: Float64Array;
  /** Per client, connection attempts it made after sinceUs (1: straight to the other edge). */
  readonly attempts: Uint32Array;
  /**
   * Per client, why its first attempt after sinceUs failed: 0 when none did, 1 when it failed without a
   * close code (refused, timed out), else the WebSocket close code.
   */
  readonly firstFailures: Uint32Array;
};

export type ConnectionsReply =
  | { readonly type: "ready" }
  | { readonly type: "failed"; readonly message: string }
  | { readonly type: "prepared"; readonly id: number; readonly signMs: number }
  | ({ readonly type: "silentOpened"; readonly id: number; readonly opened: number } & Failures)
  | ({ readonly type: "sessionsOpened"; readonly id: number } & SessionsOpened & Failures)
  | { readonly type: "censusTaken"; readonly id: number; readonly open: number }
  | { readonly type: "socketsClosed"; readonly id: number; readonly stillOpen: number }
  | ({ readonly type: "clientsOpened"; readonly id: number; readonly opened: number } & Failures)
  | ({ readonly type: "resynced"; readonly id: number } & ResyncReport)
  | { readonly type: "clientsClosed"; readonly id: number };

const failures = { failed: count, firstError: nullable(shortText) };

function typedArray<T extends Float64Array | Uint32Array>(
  constructor: { new (length: number): T; readonly name: string },
  maxItems: number,
): Decoder<T> {
  return (input, path) => {
    if (!(input instanceof constructor)) return { ok: false, failure: { path, reason: `must be a ${constructor.name}` } };
    if (input.length > maxItems) return { ok: false, failure: { path, reason: `must have at most ${maxItems} items` } };
    return { ok: true, value: input };
  };
}

const finiteMs: Decoder<number> = (input, path) =>
  typeof input === "number" && Number.isFinite(input) && input >= 0
    ? { ok: true, value: input }
    : { ok: false, failure: { path, reason: "must be a finite number >= 0" } };

export const connectionsReplyDecoder: Decoder<ConnectionsReply> = taggedUnion<ConnectionsReply>({
  ready: object({ type: literal("ready") }),
  failed: object({ type: literal("failed"), message: shortText }),
  prepared: object({ type: literal("prepared"), id: commandId, signMs: finiteMs }),
  silentOpened: object({ type: literal("silentOpened"), id: commandId, opened: count, ...failures }),
  sessionsOpened: object({
    type: literal("sessionsOpened"),
    id: commandId,
    opened: count,
    startedAtUs: wallTimeUs,
    finishedAtUs: wallTimeUs,
    welcomeHistogram: encodedHistogram,
    syncedHistogram: encodedHistogram,
    ...failures,
  }),
  censusTaken: object({ type: literal("censusTaken"), id: commandId, open: count }),
  socketsClosed: object({ type: literal("socketsClosed"), id: commandId, stillOpen: count }),
  clientsOpened: object({ type: literal("clientsOpened"), id: commandId, opened: count, ...failures }),
  resynced: object({
    type: literal("resynced"),
    id: commandId,
    delaysMs: typedArray(Float64Array, connectionsLoadLimits.connectionsPerProcessMax),
    reconnectDelaysMs: typedArray(Float64Array, connectionsLoadLimits.connectionsPerProcessMax),
    attempts: typedArray(Uint32Array, connectionsLoadLimits.connectionsPerProcessMax),
    firstFailures: typedArray(Uint32Array, connectionsLoadLimits.connectionsPerProcessMax),
  }),
  clientsClosed: object({ type: literal("clientsClosed"), id: commandId }),
});

export function decodeConnectionsCommand(input: unknown): DecodeResult<ConnectionsCommand> {
  return decode(connectionsCommandDecoder, input);
}

export function decodeConnectionsReply(input: unknown): DecodeResult<ConnectionsReply> {
  return decode(connectionsReplyDecoder, input);
}
