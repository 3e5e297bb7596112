// Typed errors for operating failures between services. Each keeps its `cause`; each boundary (client
// frame, admin HTTP, process exit) maps them to its own wire in one function.
import type { CellErrorCode } from "@cellwire/protocol";

export class CellwireError extends Error {
  override readonly name: string = "CellwireError";
  readonly code: CellErrorCode;
  constructor(code: CellErrorCode, message: string, options?: ErrorOptions) {
    super(message, options);
    this.code = code;
  }
}

/**
 * A remote service answered with an error reply. `retryAfterMs`: how long it asked the requester to wait
 * (an `overloaded` answer), when it said.
 */
export class RemoteError extends CellwireError {
  override readonly name = "RemoteError";
  readonly retryAfterMs: number | undefined;
  constructor(code: CellErrorCode, message: string, options?: ErrorOptions & { readonly retryAfterMs?: number }) {
    super(code, message, options);
    this.retryAfterMs = options?.retryAfterMs;
  }
}

/** Nobody answered within the deadline, or nobody listens on the subject. */
export class UnavailableError extends CellwireError {
  override readonly name = "UnavailableError";
}

/** A payload from another service failed to decode: a bug or a version skew, never a client's fault. */
export class BadPayloadError extends CellwireError {
  override readonly name = "BadPayloadError";
  constructor(message: string, options?: ErrorOptions) {
    super("internal", message, options);
  }
}

/** A configuration value is missing or invalid; a service exits with the message. */
export class ConfigError extends Error {
  override readonly name = "ConfigError";
}
