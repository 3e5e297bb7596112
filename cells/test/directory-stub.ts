// The directory as the cells' integration tests stand it in: each user's home is the test's to say, every
// cell is registered and active, and nothing else is asked of it. It answers a worker's batched
// `directory.resolveUsers` (the users a worker resolves within one turn, decision 0040) as the directory
// does, each user apart; a stub that answered only `directory.resolveUser` failed the relays of any two
// joined events resolved in one turn, and the tests waiting on them timed out on a fast host.
import { decodeMessage, encodeJson, type connectNats } from "@cellwire/cluster";
import {
  directoryRequest,
  directorySubject,
  type DirectoryEntryReply,
  type DirectoryErrorReply,
  type DirectoryReply,
  type DirectoryRequest,
} from "@cellwire/protocol";

export type DirectoryStub = {
  readonly cellIds: readonly string[];
  /** A user's home cell; undefined for a user unknown to the test (answered not_found). */
  readonly homeOf: (userId: string) => string | undefined;
  /**
   * Users the directory does not answer for: a lone resolve of one gets no reply at all (the caller's
   * wait runs out), and in a batch its own reply is an error, so its relay fails either way.
   */
  readonly silent?: (userId: string) => boolean;
  /** Sees every request that decoded, before it is answered. */
  readonly onRequest?: (request: DirectoryRequest) => void;
};

function homeAnswer(stub: DirectoryStub, userId: string): DirectoryEntryReply | DirectoryErrorReply {
  const cellId = stub.homeOf(userId);
  if (cellId === undefined) return { type: "directory.error", code: "not_found", message: "unknown user in the test" };
  return { type: "directory.entry", entry: { kind: "user", id: userId, cellId, epoch: 1 }, placed: false };
}

/** The stub's reply to one directory request; undefined: no reply. */
function stubDirectoryAnswer(stub: DirectoryStub, request: DirectoryRequest): DirectoryReply | undefined {
  const silent = stub.silent ?? (() => false);
  if (request.type === "directory.resolveUser") return silent(request.userId) ? undefined : homeAnswer(stub, request.userId);
  if (request.type === "directory.resolveUsers")
    return {
      type: "directory.entries",
      replies: request.userIds.map((userId) =>
        silent(userId)
          ? { type: "directory.error", code: "internal", message: "the test's directory is silent for this user" }
          : homeAnswer(stub, userId),
      ),
    };
  return { type: "directory.cells", cells: stub.cellIds.map((cellId) => ({ cellId, weight: 100, state: "active" as const })) };
}

/**
 * Answers the namespace's directory requests on `connection` as `stub` says, from now on; a request
 * that does not decode gets no reply. Flush the connection before starting a worker that will ask.
 */
export function serveDirectoryStub(connection: Awaited<ReturnType<typeof connectNats>>, namespace: string, stub: DirectoryStub): void {
  connection.subscribe(directorySubject(namespace), {
    callback: (error, message) => {
      if (error !== null) return;
      const decoded = decodeMessage(directoryRequest, message.data);
      if (!decoded.ok) return;
      stub.onRequest?.(decoded.value);
      const answer = stubDirectoryAnswer(stub, decoded.value);
      if (answer !== undefined) message.respond(encodeJson(answer));
    },
  });
}
