// The one place where a worker turns a failed request (a store refusal, a routing or capacity problem, a
// thrown error) into the cell.error reply an edge receives, and a request for a key that moved away into
// its cell.moved reply (not an error: the requester asks the new home).
import { CellwireError } from "@cellwire/cluster";
import { errorCodes, type CellErrorReply, type CellMovedReply, type DirectoryEntryKind } from "@cellwire/protocol";
import { isPostgresTimeout, isPostgresUnavailable } from "./store/errors.ts";
import type { StoreRefusal } from "./store/store.ts";

export type RequestFailure =
  | { readonly kind: "refused"; readonly refusal: StoreRefusal }
  /** Another worker (or, for a write, nobody yet) owns the key on this worker's ring (the edge routes again). */
  | { readonly kind: "not_owner"; readonly key: string; readonly ownerWorkerId: string | undefined }
  /** The store refused a write: the key was written under a later ring epoch, so this worker is a stale owner. */
  | { readonly kind: "fenced"; readonly key: string; readonly epoch: number }
  /** This worker could not renew its lease in time, so others may already consider it gone. */
  | { readonly kind: "lease_lapsed" }
  /**
   * Refused before any of it was done, with how long the requester should wait (`detail` overrides the
   * reason's text). Answered `overloaded`, which reaches the client with its retry-after.
   */
  | {
      readonly kind: "overloaded";
      readonly reason: "key_full" | "queue_full" | "migrations_full" | "sends_full";
      readonly detail?: string;
      readonly retryAfterMs?: number;
    }
  /** The caller's deadline passed before the request's turn came: not started, since nobody waits for it. */
  | { readonly kind: "deadline_exceeded"; readonly detail: string }
  /** A pipelined send whose predecessor is not stored (docs/decisions/0020): not stored either. */
  | { readonly kind: "out_of_order"; readonly clientMessageId: string; readonly afterClientMessageId: string }
  /** The key is frozen here while it moves to another cell, or importing here from one. */
  | { readonly kind: "moving"; readonly key: string }
  /** The payload did not decode: the edge and the worker disagree on the protocol, never a client's fault. */
  | { readonly kind: "bad_payload"; readonly reason: string }
  | { readonly kind: "invalid_field"; readonly message: string }
  | { readonly kind: "error"; readonly error: unknown };

/** Keeps replies well under the protocol's 2000-character error text. */
const replyMessageLengthMax = 500;

function reply(code: CellErrorReply["code"], message: string): CellErrorReply {
  return { type: "cell.error", code, message: message.slice(0, replyMessageLengthMax) };
}

const overloadedMessages = {
  key_full: "too many requests pending for this conversation or mailbox",
  queue_full: "too many requests pending on this worker",
  migrations_full: "too many migrations in flight on this worker",
  sends_full: "too many sends pending on this worker",
} as const;

/** What an overloaded reply asks for when the refuser has no better estimate. */
export const overloadedRetryAfterMsDefault = 200;

/** The answer of a tombstone: the key's new home as the tombstone recorded it. */
export function movedReply(
  kind: DirectoryEntryKind,
  id: string,
  moved: { readonly cellId: string; readonly epoch: number },
): CellMovedReply {
  return { type: "cell.moved", kind, id, cellId: moved.cellId, epoch: moved.epoch };
}

export function cellErrorReply(failure: RequestFailure): CellErrorReply {
  switch (failure.kind) {
    case "refused":
      return reply(failure.refusal, errorCodes[failure.refusal].description);
    case "not_owner":
      return reply(
        "not_owner",
        failure.ownerWorkerId === undefined
          ? `${failure.key} has no owner on this worker's ring yet`
          : `${failure.key} belongs to worker ${failure.ownerWorkerId}`,
      );
    case "fenced":
      return reply("not_owner", `${failure.key} was written under a ring epoch after ${failure.epoch}; route again`);
    case "lease_lapsed":
      return reply("not_owner", "this worker's lease lapsed; route again");
    case "overloaded":
      return {
        ...reply("overloaded", failure.detail ?? overloadedMessages[failure.reason]),
        retryAfterMs: failure.retryAfterMs ?? overloadedRetryAfterMsDefault,
      };
    case "deadline_exceeded":
      return reply("deadline_exceeded", failure.detail);
    case "out_of_order":
      return reply(
        "out_of_order",
        `send ${failure.clientMessageId} came before ${failure.afterClientMessageId}, sent before it, was stored; retry them in order`,
      );
    case "moving":
      return reply("moving", `${failure.key} is moving between cells; retry shortly`);
    case "bad_payload":
      return reply("internal", `the request does not decode: ${failure.reason}`);
    case "invalid_field":
      return reply("invalid_field", failure.message);
    case "error": {
      const { error } = failure;
      if (isPostgresUnavailable(error)) return reply("cell_unavailable", "the cell database is unreachable");
      // A timeout is a busy or silent database, not a bad request: retryable like an unreachable one.
      if (isPostgresTimeout(error)) return reply("cell_unavailable", "the cell database did not answer in time");
      // Typed errors carry a code chosen for the wire; their messages name no secrets.
      if (error instanceof CellwireError) return reply(error.code, error.message);
      return reply("internal", errorCodes.internal.description);
    }
  }
}
