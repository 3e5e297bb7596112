// Typed errors of the cell's storage, and the two facts about a pg error that callers branch on.
import { CellwireError } from "@cellwire/cluster";

/** A row from Postgres did not have the shape the schema promises: a bug or a schema skew. */
export class StoreRowError extends CellwireError {
  override readonly name = "StoreRowError";
  constructor(message: string, options?: ErrorOptions) {
    super("internal", message, options);
  }
}

/** Postgres cannot be reached (refused, reset, shutting down): retryable once it is back. */
export class PostgresUnavailableError extends CellwireError {
  override readonly name = "PostgresUnavailableError";
  constructor(message: string, options?: ErrorOptions) {
    super("cell_unavailable", message, options);
  }
}

/** Bounds the walk down `cause` chains, which are user-built and could in principle loop. */
const causeDepthMax = 8;

function* causes(error: unknown): Generator<unknown> {
  let current: unknown = error;
  for (let depth = 0; depth < causeDepthMax && current !== undefined && current !== null; depth++) {
    yield current;
    current = current instanceof Error ? current.cause : undefined;
  }
}

function codeOf(error: unknown): string | undefined {
  if (typeof error !== "object" || error === null || !("code" in error)) return undefined;
  return typeof error.code === "string" ? error.code : undefined;
}

/** The SQLSTATE of a pg error, also when drizzle wrapped it (DrizzleQueryError keeps it as `cause`). */
export function postgresErrorCode(error: unknown): string | undefined {
  for (const candidate of causes(error)) {
    const code = codeOf(candidate);
    if (code !== undefined && /^[0-9A-Z]{5}$/.test(code)) return code;
  }
  return undefined;
}

export const uniqueViolation = "23505";
export const duplicateDatabase = "42P04";

const socketErrorCodes = new Set(["ECONNREFUSED", "ECONNRESET", "ENOTFOUND", "ETIMEDOUT", "EHOSTUNREACH", "EPIPE", "EAI_AGAIN"]);
// Class 08 (connection exception) and 57P01..57P03 (admin shutdown, crash shutdown, cannot connect now).
const unavailableStates = /^(08...|57P0[123])$/;

/** True when the error says Postgres is unreachable rather than that the statement was wrong. */
export function isPostgresUnavailable(error: unknown): boolean {
  for (const candidate of causes(error)) {
    if (candidate instanceof PostgresUnavailableError) return true;
    const code = codeOf(candidate);
    if (code !== undefined && (socketErrorCodes.has(code) || unavailableStates.test(code))) return true;
    if (candidate instanceof Error && /Connection terminated|timeout exceeded when trying to connect/i.test(candidate.message)) return true;
  }
  return false;
}

// Postgres ended a wait at one of the worker's timeouts: 55P03 lock_timeout, 57014 statement_timeout (or
// a cancel), 25P03 idle_in_transaction_session_timeout.
const timedOutStates = new Set(["55P03", "57014", "25P03"]);

/**
 * True when a wait on the database ended at a timeout (docs/decisions/0019): the server's (lock,
 * statement, idle transaction) or the client's query timeout (node-postgres "Query read timeout", which
 * has no code). Nothing says the statement was wrong: the caller may try again.
 */
export function isPostgresTimeout(error: unknown): boolean {
  for (const candidate of causes(error)) {
    const code = codeOf(candidate);
    if (code !== undefined && timedOutStates.has(code)) return true;
    if (candidate instanceof Error && /^Query read timeout$/.test(candidate.message)) return true;
  }
  return false;
}

/**
 * A log-safe description: drizzle's own message repeats the query's parameters (message bodies), so the
 * innermost cause's message is used instead, with its SQLSTATE.
 */
export function describeError(error: unknown): string {
  let innermost: unknown = error;
  for (const candidate of causes(error)) innermost = candidate;
  const code = postgresErrorCode(error);
  const text = innermost instanceof Error ? `${innermost.name}: ${innermost.message}` : String(innermost);
  return code === undefined ? text : `${text} (${code})`;
}
