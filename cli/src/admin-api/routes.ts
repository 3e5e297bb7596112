// The admin HTTP API's routes and how each request is parsed, without a socket: a method and a URL become a
// route or a 404/405, and a route's path, query and JSON body become one typed AdminRequest or a 400 naming
// the first thing wrong (docs/admin-api.md lists them). Every id is checked against its protocol pattern
// before it reaches NATS; every number has a range.
import {
  addCellWorkersMax,
  array,
  boolean,
  decode,
  integer,
  isCellId,
  isConversationId,
  isUserId,
  object,
  oneOf,
  optional,
  string,
  type Decoder,
  type DirectoryEntryKind,
} from "@cellwire/protocol";

/** Moves of one drain in flight at once, at most (`cellwire drain --concurrency`). */
export const drainConcurrencyMax = 64;
/** Dead letters listed per cell, at most (`cellwire dead-letters list --limit`). */
export const deadLettersRowsMax = 10_000;
/** Dead letter ids one redrive names, at most; the operations page them to the cell. */
export const redriveRequestIdsMax = 4096;
/** A cell's capacity weight, at most (the directory's bound, `cellwire add-cell --weight`). */
export const cellWeightMax = 1_000_000;

export const addCellDefaults = { workers: 2, weight: 100 } as const;
export const drainConcurrencyDefault = 8;
export const deadLettersRowsDefault = 1000;

export type AdminRequest =
  | { readonly operation: "cells" }
  | { readonly operation: "addCell"; readonly cellId: string; readonly workers: number; readonly weight: number }
  | { readonly operation: "ring"; readonly cellId: string }
  | { readonly operation: "drain"; readonly cellId: string; readonly concurrency: number }
  | { readonly operation: "whereis"; readonly userId: string }
  | { readonly operation: "migrate"; readonly kind: DirectoryEntryKind; readonly id: string; readonly toCellId: string }
  | { readonly operation: "revoke"; readonly userId: string }
  | { readonly operation: "deadLetters"; readonly cellId: string | undefined; readonly rowsMax: number }
  | { readonly operation: "redrive"; readonly cellId: string; readonly selection: readonly number[] | "all" };

/** A request the API refuses before doing anything; the boundary writes it as `{"error":{code,message}}`. */
export class AdminHttpError extends Error {
  override readonly name = "AdminHttpError";
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly headers: Readonly<Record<string, string>> = {},
  ) {
    super(message);
  }
}

const badInput = (message: string): AdminHttpError => new AdminHttpError(400, "invalid_input", message);

type Query = ReadonlyMap<string, string>;
type Route = {
  /** What parse returns, known once routed: a request refused for its input is counted under it. */
  readonly operation: AdminRequest["operation"];
  readonly method: "GET" | "POST";
  /** Path segments after /v1; ":cellId" is a parameter. */
  readonly segments: readonly string[];
  /** Whether the request carries a JSON body (POST). */
  readonly hasBody: boolean;
  /** Query names the route reads; any other is refused. */
  readonly queryNames: readonly string[];
  readonly parse: (parameters: { readonly cellId?: string }, query: Query, body: unknown) => AdminRequest;
};

/** The body's fields, decoded or refused with the path of the first wrong field ("$.toCellId must be ..."). */
function decodeBody<T>(decoder: Decoder<T>, body: unknown): T {
  const result = decode(decoder, body);
  if (!result.ok) throw badInput(`${result.failure.path} ${result.failure.reason}`);
  return result.value;
}

// Ids are refused with the sentence the commands print for them, so a command's output is the same with
// --admin-url as without.
function requireCellId(value: string | undefined): string {
  if (value === undefined || !isCellId(value)) throw badInput(`${JSON.stringify(value ?? "")} is not a cell id`);
  return value;
}

function requireId(kind: DirectoryEntryKind, value: string): string {
  if (kind === "user" ? !isUserId(value) : !isConversationId(value)) throw badInput(`${JSON.stringify(value)} is not a ${kind} id`);
  return value;
}

/** A string field, bounded; its shape is checked by requireCellId or requireId. */
const idText = string({ minLength: 0, maxLength: 256 });

function integerQuery(query: Query, name: string, fallback: number, max: number): number {
  const raw = query.get(name);
  if (raw === undefined) return fallback;
  const value = /^[0-9]{1,9}$/.test(raw) ? Number(raw) : Number.NaN;
  if (!Number.isSafeInteger(value) || value < 1 || value > max) throw badInput(`${name} must be an integer between 1 and ${max}`);
  return value;
}

const positiveId = integer({ min: 1, max: Number.MAX_SAFE_INTEGER });

const routes: readonly Route[] = [
  { operation: "cells", method: "GET", segments: ["cells"], hasBody: false, queryNames: [], parse: () => ({ operation: "cells" }) },
  {
    operation: "addCell",
    method: "POST",
    segments: ["cells"],
    hasBody: true,
    queryNames: [],
    parse: (_parameters, _query, body) => {
      const value = decodeBody(
        object({
          cellId: idText,
          workers: optional(integer({ min: 1, max: addCellWorkersMax })),
          weight: optional(integer({ min: 1, max: cellWeightMax })),
        }),
        body,
      );
      return {
        operation: "addCell",
        cellId: requireCellId(value.cellId),
        workers: value.workers ?? addCellDefaults.workers,
        weight: value.weight ?? addCellDefaults.weight,
      };
    },
  },
  {
    operation: "ring",
    method: "GET",
    segments: ["cells", ":cellId", "ring"],
    hasBody: false,
    queryNames: [],
    parse: (parameters) => ({ operation: "ring", cellId: requireCellId(parameters.cellId) }),
  },
  {
    operation: "drain",
    method: "POST",
    segments: ["cells", ":cellId", "drain"],
    hasBody: true,
    queryNames: [],
    parse: (parameters, _query, body) => {
      const cellId = requireCellId(parameters.cellId);
      const value = decodeBody(object({ concurrency: optional(integer({ min: 1, max: drainConcurrencyMax })) }), body);
      return { operation: "drain", cellId, concurrency: value.concurrency ?? drainConcurrencyDefault };
    },
  },
  {
    operation: "whereis",
    method: "GET",
    segments: ["whereis"],
    hasBody: false,
    queryNames: ["user"],
    parse: (_parameters, query) => {
      const userId = query.get("user");
      if (userId === undefined) throw badInput("user (a user id) is required");
      return { operation: "whereis", userId: requireId("user", userId) };
    },
  },
  {
    operation: "migrate",
    method: "POST",
    segments: ["migrations"],
    hasBody: true,
    queryNames: [],
    parse: (_parameters, _query, body) => {
      const value = decodeBody(object({ kind: oneOf(["user", "conversation"]), id: idText, toCellId: idText }), body);
      return { operation: "migrate", kind: value.kind, id: requireId(value.kind, value.id), toCellId: requireCellId(value.toCellId) };
    },
  },
  {
    operation: "revoke",
    method: "POST",
    segments: ["revoke"],
    hasBody: true,
    queryNames: [],
    parse: (_parameters, _query, body) => ({
      operation: "revoke",
      userId: requireId("user", decodeBody(object({ userId: idText }), body).userId),
    }),
  },
  {
    operation: "deadLetters",
    method: "GET",
    segments: ["dead-letters"],
    hasBody: false,
    queryNames: ["cell", "limit"],
    parse: (_parameters, query) => {
      const cell = query.get("cell");
      return {
        operation: "deadLetters",
        cellId: cell === undefined ? undefined : requireCellId(cell),
        rowsMax: integerQuery(query, "limit", deadLettersRowsDefault, deadLettersRowsMax),
      };
    },
  },
  {
    operation: "redrive",
    method: "POST",
    segments: ["dead-letters", "redrive"],
    hasBody: true,
    queryNames: [],
    parse: (_parameters, _query, body) => {
      const value = decodeBody(
        object({
          cellId: idText,
          ids: optional(array(positiveId, { minItems: 1, maxItems: redriveRequestIdsMax, unique: true })),
          all: optional(boolean),
        }),
        body,
      );
      if ((value.all === true) === (value.ids !== undefined)) throw badInput("give either ids (dead letter ids) or all: true");
      return { operation: "redrive", cellId: requireCellId(value.cellId), selection: value.ids ?? "all" };
    },
  },
];

export type RouteMatch = {
  readonly route: Route;
  readonly parameters: { readonly cellId?: string };
  readonly query: Query;
};

/** A path longer than this is no route (ids are short). */
const pathLengthMax = 512;

/** Finds the route of `method` and `url` (path and query); throws AdminHttpError 404, 405 or 400. */
export function matchRoute(method: string, url: string): RouteMatch {
  const queryStart = url.indexOf("?");
  const path = queryStart === -1 ? url : url.slice(0, queryStart);
  const segments = path.split("/");
  // "", "v1", ...rest
  if (path.length > pathLengthMax || segments[0] !== "" || segments[1] !== "v1") throw unknownPath();
  const rest = segments.slice(2);
  const candidates = routes
    .map((route) => ({ route, parameters: matchSegments(route.segments, rest) }))
    .filter((candidate): candidate is { route: Route; parameters: { cellId?: string } } => candidate.parameters !== undefined);
  if (candidates.length === 0) throw unknownPath();
  const match = candidates.find((candidate) => candidate.route.method === method);
  if (match === undefined) {
    const allow = candidates.map((candidate) => candidate.route.method).join(", ");
    throw new AdminHttpError(405, "method_not_allowed", `use ${allow}`, { allow });
  }
  return { ...match, query: parseQuery(queryStart === -1 ? "" : url.slice(queryStart + 1), match.route.queryNames) };
}

// Not `not_found`, which is an operation's answer (a cell never started): a client tells the two apart.
const unknownPath = (): AdminHttpError => new AdminHttpError(404, "unknown_path", "no such path (docs/admin-api.md lists them)");

function matchSegments(pattern: readonly string[], segments: readonly string[]): { cellId?: string } | undefined {
  if (pattern.length !== segments.length) return undefined;
  const parameters: { cellId?: string } = {};
  for (let index = 0; index < pattern.length; index++) {
    const expected = pattern[index];
    const actual = segments[index];
    if (actual === undefined) return undefined;
    if (expected === ":cellId") parameters.cellId = decodeSegment(actual);
    else if (expected !== actual) return undefined;
  }
  return parameters;
}

/** A percent-encoded parameter as it was meant; one that does not decode is kept as it came, and refused as an id. */
function decodeSegment(segment: string): string {
  try {
    return decodeURIComponent(segment);
  } catch {
    return segment;
  }
}

function parseQuery(text: string, names: readonly string[]): Query {
  const query = new Map<string, string>();
  if (text === "") return query;
  for (const [name, value] of new URLSearchParams(text)) {
    if (!names.includes(name)) throw badInput(`unknown query parameter ${JSON.stringify(name.slice(0, 64))}`);
    if (query.has(name)) throw badInput(`query parameter ${name} given twice`);
    query.set(name, value);
  }
  return query;
}

/** The typed request of a matched route and its decoded body (undefined for a route without one). */
export function parseAdminRequest(match: RouteMatch, body: unknown): AdminRequest {
  return match.route.parse(match.parameters, match.query, body);
}
