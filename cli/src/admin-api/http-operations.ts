// The Operations over the admin HTTP API: what `cellwire ring`, `cells`, `whereis`, `migrate`, ... do with
// --admin-url (or CELLWIRE_ADMIN_URL). The answers are decoded like any input; an error answer becomes the
// OperationError the server's operations threw, so the command prints what it prints without the API.
import {
  array,
  boolean,
  decode,
  integer,
  isRecord,
  literal,
  object,
  oneOf,
  parseJson,
  string,
  taggedUnion,
  type Decoder,
  type DirectoryEntryKind,
} from "@cellwire/protocol";
import type { DrainProgress } from "../migration.ts";
import {
  OperationError,
  operationErrorCodes,
  type AddCellProgress,
  type AddCellReport,
  type CellsReport,
  type DeadLettersReport,
  type DrainSummary,
  type MigrateReport,
  type Operations,
  type OperationsSession,
  type RedriveReport,
  type RevokeReport,
  type RingReport,
  type WhereisReport,
} from "../operations.ts";
import { ndjsonContentType } from "./admin-api-server.ts";
import { redriveRequestIdsMax } from "./routes.ts";

/** Why the admin API could not be used at all (unreachable, the token refused, an answer that does not decode). */
export class AdminApiError extends Error {
  override readonly name = "AdminApiError";
}

// Servers may add fields later (docs/decisions/0010): answers are read with unknown fields ignored.
const ignore = { unknownFields: "ignore" } as const;
const text = string({ maxLength: 100_000 });
const count = integer({ min: 0, max: Number.MAX_SAFE_INTEGER });
const number: Decoder<number> = (input, path) =>
  typeof input === "number" && Number.isFinite(input)
    ? { ok: true, value: input }
    : { ok: false, failure: { path, reason: "must be a number" } };
const listMax = { maxItems: 1_000_000 };
/** A progress or result line is small; a longer one is not this API's. */
const ndjsonLineBytesMax = 1024 * 1024;

const cellsReport: Decoder<CellsReport> = object(
  { namespace: text, cells: array(object({ cellId: text, weight: count, state: oneOf(["active", "draining"]) }, ignore), listMax) },
  ignore,
);
const ringReport: Decoder<RingReport> = object(
  {
    cellId: text,
    namespace: text,
    members: array(
      object({ workerId: text, leaseAgeMs: count, leaseMs: count, live: boolean, share: number, subject: text }, ignore),
      listMax,
    ),
  },
  ignore,
);
const whereisReport: Decoder<WhereisReport> = (input, path) => {
  if (isRecord(input) && input["placed"] === false) return object({ userId: text, placed: literal(false) }, ignore)(input, path);
  return object({ userId: text, placed: literal(true), cellId: text, epoch: count }, ignore)(input, path);
};
const migrateReport: Decoder<MigrateReport> = object(
  {
    kind: oneOf(["user", "conversation"]),
    id: text,
    fromCellId: text,
    toCellId: text,
    epoch: count,
    pauseMs: count,
    copiedItems: count,
    alreadyMoved: boolean,
    tookMs: count,
  },
  ignore,
);
const drainSummary: Decoder<DrainSummary> = object(
  {
    cellId: text,
    movedUsers: count,
    movedConversations: count,
    elapsedMs: count,
    pauseP50Ms: number,
    pauseP99Ms: number,
    pauseMaxMs: number,
  },
  ignore,
);
const drainProgress: Decoder<DrainProgress> = object(
  { movedUsers: count, movedConversations: count, failed: count, elapsedMs: number, pass: count },
  ignore,
);
const addCellProgress: Decoder<AddCellProgress> = (input, path) => {
  if (isRecord(input) && input["stage"] === "starting") return object({ stage: literal("starting") }, ignore)(input, path);
  return object({ stage: literal("started"), workerIds: array(text, listMax) }, ignore)(input, path);
};
const addCellReport: Decoder<AddCellReport> = object({ cellId: text, weight: count, state: text, workerIds: array(text, listMax) }, ignore);
const revokeReport: Decoder<RevokeReport> = object({ userId: text, revokedAtMs: count }, ignore);
const deadLettersReport: Decoder<DeadLettersReport> = object(
  {
    namespace: text,
    cellIds: array(text, listMax),
    deadLetters: array(
      object(
        {
          cellId: text,
          id: count,
          conversationId: text,
          recipientUserId: text,
          eventId: text,
          attempts: count,
          lastError: text,
          createdAtMs: count,
          deadLetteredAtMs: count,
        },
        ignore,
      ),
      listMax,
    ),
    truncatedCellIds: array(text, listMax),
    unreachableCellIds: array(text, listMax),
    problems: array(object({ cellId: text, message: text }, ignore), listMax),
  },
  ignore,
);
const redriveReport: Decoder<RedriveReport> = object({ cellId: text, redrivenRows: count }, ignore);
const errorBody = object({ error: object({ code: text, message: text }, ignore) }, ignore);

type StreamLine<P, R> =
  { type: "progress"; progress: P } | { type: "result"; result: R } | { type: "error"; error: { code: string; message: string } };

function streamLine<P, R>(progress: Decoder<P>, result: Decoder<R>): Decoder<StreamLine<P, R>> {
  return taggedUnion<StreamLine<P, R>>({
    progress: object({ type: literal("progress"), progress }, ignore),
    result: object({ type: literal("result"), result }, ignore),
    error: object({ type: literal("error"), error: object({ code: text, message: text }, ignore) }, ignore),
  });
}

/** The error an answer carries: an operation's own (printed as the command prints it), or the API's. */
function answerError(status: number, code: string, message: string): Error {
  const operationCode = operationErrorCodes.find((candidate) => candidate === code);
  if (operationCode !== undefined) return new OperationError(operationCode, message);
  return new AdminApiError(`the admin API answered ${status} ${code}: ${message}`);
}

export type HttpOperationsOptions = {
  /** The API's base URL, e.g. http://127.0.0.1:8090. */
  readonly baseUrl: string;
  readonly token: string;
};

export class HttpOperations implements Operations {
  private readonly baseUrl: string;
  constructor(private readonly options: HttpOperationsOptions) {
    this.baseUrl = options.baseUrl.replace(/\/+$/, "");
  }

  private async send(method: "GET" | "POST", path: string, body?: unknown): Promise<Response> {
    let response: Response;
    try {
      response = await fetch(`${this.baseUrl}${path}`, {
        method,
        headers: {
          authorization: `Bearer ${this.options.token}`,
          ...(body === undefined ? {} : { "content-type": "application/json" }),
        },
        ...(body === undefined ? {} : { body: JSON.stringify(body) }),
      });
    } catch (error) {
      throw new AdminApiError(
        `the admin API at ${this.baseUrl} could not be reached: ${error instanceof Error ? error.message : String(error)}`,
        {
          cause: error,
        },
      );
    }
    if (response.ok) return response;
    const parsed = parseJson(await response.text());
    const decoded = parsed.ok ? decode(errorBody, parsed.value) : undefined;
    if (decoded === undefined || !decoded.ok) throw new AdminApiError(`the admin API answered ${response.status} without an error body`);
    throw answerError(response.status, decoded.value.error.code, decoded.value.error.message);
  }

  private async json<T>(decoder: Decoder<T>, method: "GET" | "POST", path: string, body?: unknown): Promise<T> {
    const response = await this.send(method, path, body);
    const parsed = parseJson(await response.text());
    const decoded = parsed.ok ? decode(decoder, parsed.value) : parsed;
    if (!decoded.ok)
      throw new AdminApiError(
        `the admin API answered ${path} with something that does not decode: ${decoded.failure.path} ${decoded.failure.reason}`,
      );
    return decoded.value;
  }

  /** Reads NDJSON progress lines, handing each to `onProgress`, until the result or the error line. */
  private async stream<P, R>(
    progress: Decoder<P>,
    result: Decoder<R>,
    path: string,
    body: unknown,
    onProgress: (value: P) => void,
  ): Promise<R> {
    const response = await this.send("POST", path, body);
    if (!(response.headers.get("content-type") ?? "").startsWith(ndjsonContentType) || response.body === null)
      throw new AdminApiError(`the admin API answered ${path} without a progress stream`);
    const decoder = streamLine(progress, result);
    for await (const raw of ndjsonLines(response.body)) {
      if (raw === "") continue;
      const parsed = parseJson(raw);
      const decoded = parsed.ok ? decode(decoder, parsed.value) : parsed;
      if (!decoded.ok)
        throw new AdminApiError(`the admin API streamed a line that does not decode: ${decoded.failure.path} ${decoded.failure.reason}`);
      const line = decoded.value;
      if (line.type === "progress") onProgress(line.progress);
      else if (line.type === "result") return line.result;
      else throw answerError(response.status, line.error.code, line.error.message);
    }
    throw new AdminApiError(`the admin API ended the stream of ${path} without a result (did it stop?)`);
  }

  cells(): Promise<CellsReport> {
    return this.json(cellsReport, "GET", "/v1/cells");
  }

  ring(cellId: string): Promise<RingReport> {
    return this.json(ringReport, "GET", `/v1/cells/${encodeURIComponent(cellId)}/ring`);
  }

  whereis(userId: string): Promise<WhereisReport> {
    return this.json(whereisReport, "GET", `/v1/whereis?${new URLSearchParams({ user: userId }).toString()}`);
  }

  migrate(kind: DirectoryEntryKind, id: string, toCellId: string): Promise<MigrateReport> {
    return this.json(migrateReport, "POST", "/v1/migrations", { kind, id, toCellId });
  }

  drain(cellId: string, concurrency: number, onProgress: (progress: DrainProgress) => void): Promise<DrainSummary> {
    return this.stream(drainProgress, drainSummary, `/v1/cells/${encodeURIComponent(cellId)}/drain`, { concurrency }, onProgress);
  }

  addCell(cellId: string, workers: number, weight: number, onProgress: (progress: AddCellProgress) => void): Promise<AddCellReport> {
    return this.stream(addCellProgress, addCellReport, "/v1/cells", { cellId, workers, weight }, onProgress);
  }

  revoke(userId: string): Promise<RevokeReport> {
    return this.json(revokeReport, "POST", "/v1/revoke", { userId });
  }

  deadLetters(cellId: string | undefined, rowsMax: number): Promise<DeadLettersReport> {
    const query = new URLSearchParams({ ...(cellId === undefined ? {} : { cell: cellId }), limit: String(rowsMax) });
    return this.json(deadLettersReport, "GET", `/v1/dead-letters?${query.toString()}`);
  }

  /**
   * The command may name any number of ids, and one twice: each is sent once (a second redrive of an id
   * adds no rows), in as many requests as the API's bound asks.
   */
  async redrive(cellId: string, selection: readonly number[] | "all"): Promise<RedriveReport> {
    if (selection === "all") return this.json(redriveReport, "POST", "/v1/dead-letters/redrive", { cellId, all: true });
    const distinct = [...new Set(selection)];
    let redrivenRows = 0;
    for (let start = 0; start < distinct.length; start += redriveRequestIdsMax) {
      const ids = distinct.slice(start, start + redriveRequestIdsMax);
      redrivenRows += (await this.json(redriveReport, "POST", "/v1/dead-letters/redrive", { cellId, ids })).redrivenRows;
    }
    return { cellId, redrivenRows };
  }
}

/** The lines of a streamed body, as they arrive; a line longer than ndjsonLineBytesMax is refused. */
async function* ndjsonLines(body: ReadableStream<Uint8Array>): AsyncGenerator<string> {
  const reader = body.getReader();
  const decoder = new TextDecoder();
  let buffered = "";
  try {
    for (;;) {
      const { done, value } = await reader.read();
      buffered += done ? decoder.decode() : decoder.decode(value, { stream: true });
      let newline = buffered.indexOf("\n");
      while (newline !== -1) {
        yield buffered.slice(0, newline);
        buffered = buffered.slice(newline + 1);
        newline = buffered.indexOf("\n");
      }
      if (buffered.length > ndjsonLineBytesMax)
        throw new AdminApiError(`the admin API streamed a line of more than ${ndjsonLineBytesMax} bytes`);
      if (done) {
        if (buffered !== "") yield buffered;
        return;
      }
    }
  } finally {
    reader.releaseLock();
  }
}

/** An operations session over the API: nothing to open or close (fetch keeps its own connections). */
export function openHttpOperations(options: HttpOperationsOptions): OperationsSession {
  return { operations: new HttpOperations(options), close: () => Promise.resolve() };
}
