// Operating failures of the directory's store. Expected outcomes (not found, no cell, unknown cell) are
// values, not errors; these are what a caller cannot branch on but must report.
import { CellwireError } from "@cellwire/cluster";

/** Redis did not answer (down, unreachable, timed out, loading): the request may succeed later. */
export class RedisUnavailableError extends CellwireError {
  override readonly name = "RedisUnavailableError";
  constructor(message: string, options?: ErrorOptions) {
    super("directory_unavailable", message, options);
  }
}

/** Redis answered with an error, or with a value that does not decode: a bug or tampered data. */
export class DirectoryStoreError extends CellwireError {
  override readonly name = "DirectoryStoreError";
  constructor(message: string, options?: ErrorOptions) {
    super("internal", message, options);
  }
}

// Redis error replies that mean "not now" rather than "never": the server is loading, busy with a script,
// a replica, or a cluster in the middle of a failover.
const transientReplyPrefixes = ["LOADING", "BUSY", "READONLY", "MASTERDOWN", "TRYAGAIN", "CLUSTERDOWN"];

/**
 * Classifies an error thrown by ioredis. ioredis reports error replies as ReplyError; everything else
 * (closed stream, disabled offline queue, command timeout, retries exhausted) means Redis did not answer.
 */
export function fromRedisError(error: unknown, operation: string): CellwireError {
  if (error instanceof CellwireError) return error;
  const message = error instanceof Error ? error.message : String(error);
  const isReply = error instanceof Error && error.name === "ReplyError";
  if (isReply && !transientReplyPrefixes.some((prefix) => message.startsWith(prefix))) {
    return new DirectoryStoreError(`redis refused ${operation}: ${message}`, { cause: error });
  }
  return new RedisUnavailableError(`redis did not answer ${operation}: ${message}`, { cause: error });
}
