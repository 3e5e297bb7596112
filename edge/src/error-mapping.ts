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

/**
 * Codes whose text never varies: a `not_a_member` answers alike whether the conversation does not exist
 * or exists without the user (issue 10), so its frame must not carry whatever text the layer that refused
 * chose (the edge for an id the directory does not know, the cell for one it homes). Every error frame is
 * built here, so this is the one place that guarantees it.
 */
const fixedTextCodes: ReadonlySet<ErrorCode> = new Set<ErrorCode>(["not_a_member"]);

export function errorFrame(code: ErrorCode, message: string, requestId: string | undefined): ErrorFrame {
  // A message may quote what the client sent (a decode failure names the field); past the limit an SDK
  // could not read the error at all.
  const bounded = message.length > errorMessageLengthMax ? message.slice(0, errorMessageLengthMax) : message;
  // not_a_member keeps one fixed text, so a non-member cannot tell an unknown conversation from another's.
  const text = fixedTextCodes.has(code) ? errorCodes[code].description : bounded;
  const frame: ErrorFrame = { type: "error", code, message: text, retryable: errorCodes[code].retryable };
  return requestId === undefined ? frame : { ...frame, requestId };
}

/** The one answer to a conversation the user may not see: it does not exist, or the user is not in it. */
export function notAMemberFrame(requestId: string | undefined): ErrorFrame {
  return errorFrame("not_a_member", errorCodes.not_a_member.description, requestId);
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
