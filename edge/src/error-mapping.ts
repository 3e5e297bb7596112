// The one place where failures become error frames for clients.
import { CellwireError } from "@cellwire/cluster";
import { errorCodes, errorMessageLengthMax, type CellErrorCode, type ErrorCode, type ErrorFrame } from "@cellwire/protocol";

/** Cell-internal codes never reach a client: each maps to the client code that tells it what to do. */
export function clientErrorCode(code: CellErrorCode): ErrorCode {
  switch (code) {
    case "not_owner":
      return "cell_unavailable";
    case "unknown_cell":
      return "internal";
    case "not_found":
      return "not_a_member";
    // A key still frozen for a migration once the edge's own retries gave up: the client retries later.
    case "moving":
      return "cell_unavailable";
    // Only a migrating cell ever asks for a move; reaching a client, it is a server bug.
    case "entry_changed":
      return "internal";
    default:
      return code;
  }
}

function isServiceFailure(code: ErrorCode): boolean {
  return code === "internal" || code === "directory_unavailable" || code === "cell_unavailable" || code === "no_cell_available";
}

export function errorFrame(code: ErrorCode, message: string, requestId: string | undefined): ErrorFrame {
  // A message may quote what the client sent (a decode failure names the field); past the limit an SDK
  // could not read the error at all.
  const bounded = message.length > errorMessageLengthMax ? message.slice(0, errorMessageLengthMax) : message;
  const frame: ErrorFrame = { type: "error", code, message: bounded, retryable: errorCodes[code].retryable };
  return requestId === undefined ? frame : { ...frame, requestId };
}

/** Maps anything thrown while serving a request; unexpected errors are logged, not shown. */
export function errorFrameFor(error: unknown, requestId: string | undefined, logUnexpected: (message: string) => void): ErrorFrame {
  if (error instanceof CellwireError) {
    const code = clientErrorCode(error.code);
    if (code === "internal") logUnexpected(`${error.name}: ${error.message}`);
    // Failures of the services behind the edge carry their own details (Redis keys, subjects): a client
    // gets the code's documented text; the detail stays in the logs.
    if (isServiceFailure(code)) return errorFrame(code, code === "internal" ? "internal error" : errorCodes[code].description, requestId);
    return errorFrame(code, error.message, requestId);
  }
  logUnexpected(error instanceof Error ? (error.stack ?? error.message) : String(error));
  return errorFrame("internal", "internal error", requestId);
}
