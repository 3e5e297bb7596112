// The IPC messages between the chat benchmark's coordinator (main.ts) and its load processes
// (load-process.ts), with their decoders: what arrives over IPC is unknown input, like any other.
//
// The channel uses Node's "advanced" serialization (structured clone), so the per-key tallies of a window
// travel as typed arrays rather than as JSON numbers. Every command carries an `id`, and its reply the
// same id; a process runs one command at a time, in order. Two messages come unasked: `ready` once the
// process has loaded, and `failed` when it cannot go on.
import {
  array,
  boolean,
  decode,
  failure,
  integer,
  literal,
  nullable,
  object,
  oneOf,
  string,
  success,
  taggedUnion,
  userId as userIdDecoder,
  type DecodeResult,
  type Decoder,
} from "@cellwire/protocol";

export const systemNames = ["cellwire", "socketio"] as const;
export type SystemName = (typeof systemNames)[number];

/** Limits that keep a wrong message from exhausting memory; each is far above what a run uses. */
export const loadLimits = {
  usersPerProcessMax: 100_000,
  conversationsMax: 100_000,
  membersPerConversationMax: 1000,
  serverUrlsMax: 16,
  /** Measured sends (or delivered keys) of one process in one window. */
  windowKeysMax: 50_000_000,
  textLengthMax: 4096,
  encodedHistogramLengthMax: 1_000_000,
} as const;

const commandId = integer({ min: 0, max: Number.MAX_SAFE_INTEGER });
const index = integer({ min: 0, max: Number.MAX_SAFE_INTEGER });
const count = integer({ min: 0, max: Number.MAX_SAFE_INTEGER });
const shortText = string({ maxLength: loadLimits.textLengthMax });
const conversationId = string({ minLength: 1, maxLength: 128 });
const url = string({ minLength: 1, maxLength: 2048, pattern: /^(wss?|https?):\/\// });

function finiteNumber(rule: { readonly min: number; readonly max: number; readonly exclusiveMin?: boolean }): Decoder<number> {
  return (input, path) => {
    if (typeof input !== "number" || !Number.isFinite(input)) return failure(path, "must be a finite number");
    if (input < rule.min || input > rule.max || (rule.exclusiveMin === true && input === rule.min)) {
      return failure(path, `must be ${rule.exclusiveMin === true ? "above" : "at least"} ${rule.min} and at most ${rule.max}`);
    }
    return success(input);
  };
}

function typedArray<T extends Float64Array | Uint32Array>(
  constructor: { new (length: number): T; readonly name: string },
  maxItems: number,
): Decoder<T> {
  return (input, path) => {
    if (!(input instanceof constructor)) return failure(path, `must be a ${constructor.name}`);
    if (input.length > maxItems) return failure(path, `must have at most ${maxItems} items`);
    return success(input);
  };
}

// ---------------------------------------------------------------------------------------------------
// Commands: coordinator → load process

export type LoadUser = { readonly userIndex: number; readonly userId: string; readonly serverUrls: readonly string[] };

export type SetupCommand = {
  readonly type: "setup";
  readonly id: number;
  readonly system: SystemName;
  readonly processIndex: number;
  readonly processCount: number;
  readonly bodyBytes: number;
  /** The device id of every Cellwire connection (one device per user). */
  readonly deviceId: string;
  /** Where the history recording goes (Cellwire only); null records nothing. */
  readonly recordingPath: string | null;
  readonly users: readonly LoadUser[];
};

/** Connects every user of the process, at most `connectsInFlightMax` at a time. */
export type ConnectCommand = { readonly type: "connect"; readonly id: number; readonly connectsInFlightMax: number };

/** Conversations whose creator (first member) this process holds. */
export type CreateCommand = {
  readonly type: "create";
  readonly id: number;
  readonly conversations: readonly { readonly index: number; readonly memberUserIds: readonly string[] }[];
};

export type PlannedConversation = {
  readonly index: number;
  readonly conversationId: string;
  readonly memberUserIndexes: readonly number[];
};

/** Every conversation of the run, with its id: each process joins its members' connections and picks their send targets. */
export type JoinCommand = { readonly type: "join"; readonly id: number; readonly conversations: readonly PlannedConversation[] };

/** Starts a window: the process sends its share of `rate` from startUs for warmupS + durationS seconds. */
export type WindowCommand = {
  readonly type: "window";
  readonly id: number;
  readonly rate: number;
  readonly startUs: number;
  readonly warmupS: number;
  readonly durationS: number;
};

export type ProgressCommand = { readonly type: "progress"; readonly id: number };
/** Ends the window's measurement: the reply holds everything counted, and the counts start again. */
export type ReportCommand = { readonly type: "report"; readonly id: number };
/** Waits until every send of the run was answered (acked or failed), or the deadline. */
export type SettleCommand = { readonly type: "settle"; readonly id: number; readonly deadlineMs: number };
/** Waits until each named user's connection reached its position in the history recording, or the deadline. */
export type CatchUpCommand = {
  readonly type: "catchUp";
  readonly id: number;
  readonly deadlineMs: number;
  readonly positions: readonly { readonly userIndex: number; readonly position: number }[];
};
/** Closes every connection and the recording; the process exits once the channel closes. */
export type FinishCommand = { readonly type: "finish"; readonly id: number };

export type LoadCommand =
  | SetupCommand
  | ConnectCommand
  | CreateCommand
  | JoinCommand
  | WindowCommand
  | ProgressCommand
  | ReportCommand
  | SettleCommand
  | CatchUpCommand
  | FinishCommand;

const loadUser: Decoder<LoadUser> = object({
  userIndex: index,
  userId: userIdDecoder,
  serverUrls: array(url, { minItems: 1, maxItems: loadLimits.serverUrlsMax }),
});

const deadlineMs = integer({ min: 0, max: 3_600_000 });

export const loadCommandDecoder: Decoder<LoadCommand> = taggedUnion<LoadCommand>({
  setup: object({
    type: literal("setup"),
    id: commandId,
    system: oneOf(systemNames),
    processIndex: index,
    processCount: integer({ min: 1, max: 64 }),
    bodyBytes: integer({ min: 1, max: 1_000_000 }),
    deviceId: string({ minLength: 1, maxLength: 64, pattern: /^[A-Za-z0-9_-]+$/ }),
    recordingPath: nullable(string({ minLength: 1, maxLength: 4096 })),
    users: array(loadUser, { maxItems: loadLimits.usersPerProcessMax }),
  }),
  connect: object({ type: literal("connect"), id: commandId, connectsInFlightMax: integer({ min: 1, max: 10_000 }) }),
  create: object({
    type: literal("create"),
    id: commandId,
    conversations: array(
      object({ index, memberUserIds: array(userIdDecoder, { minItems: 2, maxItems: loadLimits.membersPerConversationMax }) }),
      { maxItems: loadLimits.conversationsMax },
    ),
  }),
  join: object({
    type: literal("join"),
    id: commandId,
    conversations: array(
      object({ index, conversationId, memberUserIndexes: array(index, { minItems: 2, maxItems: loadLimits.membersPerConversationMax }) }),
      { maxItems: loadLimits.conversationsMax },
    ),
  }),
  window: object({
    type: literal("window"),
    id: commandId,
    rate: finiteNumber({ min: 0, max: 10_000_000, exclusiveMin: true }),
    startUs: finiteNumber({ min: 0, max: Number.MAX_SAFE_INTEGER }),
    warmupS: finiteNumber({ min: 0, max: 3600 }),
    durationS: finiteNumber({ min: 0, max: 3600, exclusiveMin: true }),
  }),
  progress: object({ type: literal("progress"), id: commandId }),
  report: object({ type: literal("report"), id: commandId }),
  settle: object({ type: literal("settle"), id: commandId, deadlineMs }),
  catchUp: object({
    type: literal("catchUp"),
    id: commandId,
    deadlineMs,
    positions: array(object({ userIndex: index, position: count }), { maxItems: loadLimits.usersPerProcessMax }),
  }),
  finish: object({ type: literal("finish"), id: commandId }),
});

// ---------------------------------------------------------------------------------------------------
// Replies: load process → coordinator

/** What went wrong with some of a batch of operations: how many, and the first reason. */
export type Failures = { readonly failed: number; readonly firstError: string | null };

export type WindowReport = {
  /** Sends intended inside the measured window. */
  readonly sent: number;
  readonly acked: number;
  readonly failed: number;
  readonly firstError: string | null;
  /** Window messages a connection received again (not counted as deliveries). */
  readonly duplicates: number;
  /** Connections that dropped during the window (they reconnect on their own). */
  readonly connectionsLost: number;
  readonly ackHistogram: string;
  readonly deliveryHistogram: string;
  /**
   * How late after its intended time each window send was handed to the client: the load generator's own
   * lateness (its timers), which the ack and delivery latencies include, since they count from the
   * intended time.
   */
  readonly issueLatenessHistogram: string;
  readonly sentKeys: Float64Array;
  readonly sentMembers: Uint32Array;
  readonly deliveredKeys: Float64Array;
  readonly onTime: Uint32Array;
  readonly late: Uint32Array;
};

export type LoadReply =
  | { readonly type: "ready" }
  | { readonly type: "failed"; readonly message: string }
  | { readonly type: "setUp"; readonly id: number }
  | ({ readonly type: "connected"; readonly id: number; readonly connected: number } & Failures)
  | ({
      readonly type: "created";
      readonly id: number;
      readonly conversations: readonly { readonly index: number; readonly conversationId: string }[];
    } & Failures)
  | ({ readonly type: "joined"; readonly id: number } & Failures)
  | { readonly type: "windowStarted"; readonly id: number }
  | {
      readonly type: "progress";
      readonly id: number;
      /** Every send of the window was issued. */
      readonly sendingDone: boolean;
      readonly sent: number;
      /** Window sends answered, acked or failed. */
      readonly settled: number;
      /** Deliveries the window's sends of this process owe (Σ members). */
      readonly expected: number;
      /** Window deliveries this process's connections received, each once. */
      readonly delivered: number;
    }
  | ({ readonly type: "report"; readonly id: number } & WindowReport)
  | { readonly type: "settled"; readonly id: number; readonly pending: number }
  | { readonly type: "caughtUp"; readonly id: number; readonly behind: number }
  | { readonly type: "finished"; readonly id: number };

const failures = { failed: count, firstError: nullable(shortText) };
const keys = typedArray(Float64Array, loadLimits.windowKeysMax);
const counts = typedArray(Uint32Array, loadLimits.windowKeysMax);
const encodedHistogram = string({ minLength: 1, maxLength: loadLimits.encodedHistogramLengthMax });

export const loadReplyDecoder: Decoder<LoadReply> = taggedUnion<LoadReply>({
  ready: object({ type: literal("ready") }),
  failed: object({ type: literal("failed"), message: shortText }),
  setUp: object({ type: literal("setUp"), id: commandId }),
  connected: object({ type: literal("connected"), id: commandId, connected: count, ...failures }),
  created: object({
    type: literal("created"),
    id: commandId,
    conversations: array(object({ index, conversationId }), { maxItems: loadLimits.conversationsMax }),
    ...failures,
  }),
  joined: object({ type: literal("joined"), id: commandId, ...failures }),
  windowStarted: object({ type: literal("windowStarted"), id: commandId }),
  progress: object({
    type: literal("progress"),
    id: commandId,
    sendingDone: boolean,
    sent: count,
    settled: count,
    expected: count,
    delivered: count,
  }),
  report: object({
    type: literal("report"),
    id: commandId,
    sent: count,
    acked: count,
    failed: count,
    firstError: nullable(shortText),
    duplicates: count,
    connectionsLost: count,
    ackHistogram: encodedHistogram,
    deliveryHistogram: encodedHistogram,
    issueLatenessHistogram: encodedHistogram,
    sentKeys: keys,
    sentMembers: counts,
    deliveredKeys: keys,
    onTime: counts,
    late: counts,
  }),
  settled: object({ type: literal("settled"), id: commandId, pending: count }),
  caughtUp: object({ type: literal("caughtUp"), id: commandId, behind: count }),
  finished: object({ type: literal("finished"), id: commandId }),
});

export function decodeLoadCommand(input: unknown): DecodeResult<LoadCommand> {
  return decode(loadCommandDecoder, input);
}

export function decodeLoadReply(input: unknown): DecodeResult<LoadReply> {
  return decode(loadReplyDecoder, input);
}

/** The first line of an error, cut to fit a reply. */
export function describeError(error: unknown): string {
  const text = error instanceof Error ? `${error.name}: ${error.message}` : String(error);
  const firstLine = text.split("\n", 1)[0] ?? text;
  return firstLine.length > 500 ? `${firstLine.slice(0, 500)}…` : firstLine;
}
