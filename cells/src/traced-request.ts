// A worker's request (any kind but a batch of sends; each page of a batch of pages) in the trace it
// carries, `parent` (its headers', or the page's in its batch's headers), when tracing is on
// (docs/decisions/0034): one span from its arrival until it and its after-reply work are done, active
// meanwhile, so the requests it makes (relays to mailbox owners, directory lookups) carry the trace on;
// an error reply marks the span with its code.
import type { TraceContext, Tracing } from "@cellwire/cluster";
import type { CellReply } from "@cellwire/protocol";

export async function handleTraced(
  tracing: Tracing,
  parent: TraceContext | undefined,
  requestType: string,
  handle: (respond: (reply: CellReply) => void) => Promise<void>,
  respond: (reply: CellReply) => void,
): Promise<void> {
  let failure: string | undefined;
  const respondTraced = (reply: CellReply): void => {
    if (reply.type === "cell.error") failure = reply.code;
    respond(reply);
  };
  await tracing.inSpanOf(
    "worker.request",
    { "cellwire.request.type": requestType },
    parent,
    async () => {
      await handle(respondTraced);
      return failure;
    },
    (failed) => failed,
  );
}
