// The one place where a worker turns a failed request (a store refusal, a routing or capacity problem, a
// thrown error) into the cell.error reply an edge receives.
import { CellwireError } from "@cellwire/cluster";
import { errorCodes, type CellErrorReply } from "@cellwire/protocol";
import { isPostgresUnavailable } from "./store/errors.ts";
import type { StoreRefusal } from "./store/store.ts";

export type RequestFailure =
  | { readonly kind: "refused"; readonly refusal: StoreRefusal }
  /** Another worker (or, for a write, nobody yet) owns the key on this worker's ring (the edge routes again). */
  | { readonly kind: "not_owner"; readonly key: string; readonly ownerWorkerId: string | undefined }
  /** The store refused a write: the key was written under a later ring epoch, so this worker is a stale owner. */
  | { readonly kind: "fenced"; readonly key: string; readonly epoch: number }
  /** This worker could not renew its lease in time, so others may already consider it gone. */
  | { readonly kind: "lease_lapsed" }
  | { readonly kind: "overloaded"; readonly reason: "key_full" | "queue_full" }
  /** The payload did not decode: the edge and the worker disagree on the protocol, never a client's fault. */
  | { readonly kind: "bad_payload"; readonly reason: string }
  | { readonly kind: "invalid_field"; readonly message: string }
  | { readonly kind: "error"; readonly error: unknown };

/** Keeps replies well under the protocol's 2000-character error text. */
const replyMessageLengthMax = 500;

function reply(code: CellErrorReply["code"], message: string): CellErrorReply {
  return { type: "cell.error", code, message: message.slice(0, replyMessageLengthMax) };
}

export function cellErrorReply(failure: RequestFailure): CellErrorReply {
  switch (failure.kind) {
    case "refused":
      return reply(failure.refusal, errorCodes[failure.refusal].description);
    case "not_owner":
      return reply(
        "not_owner",
        failure.ownerWorkerId === undefined ? `${failure.key} has no owner on this worker's ring yet` : `${failure.key} belongs to worker ${failure.ownerWorkerId}`,
      );
    case "fenced":
      return reply("not_owner", `${failure.key} was written under a ring epoch after ${failure.epoch}; route again`);
    case "lease_lapsed":
      return reply("not_owner", "this worker's lease lapsed; route again");
    case "overloaded":
      return reply(
        "cell_unavailable",
        failure.reason === "key_full" ? "too many requests pending for this conversation or mailbox" : "too many requests pending on this worker",
      );
    case "bad_payload":
      return reply("internal", `the request does not decode: ${failure.reason}`);
    case "invalid_field":
      return reply("invalid_field", failure.message);
    case "error": {
      const { error } = failure;
      if (isPostgresUnavailable(error)) return reply("cell_unavailable", "the cell database is unreachable");
      // Typed errors carry a code chosen for the wire; their messages name no secrets.
      if (error instanceof CellwireError) return reply(error.code, error.message);
      return reply("internal", errorCodes.internal.description);
    }
  }
}
