// A batch of mailbox pages (cell.mailboxPageBatch, docs/decisions/0042): the pages an edge's connects of
// one turn asked of this worker, in one NATS request. Each page, decoded once with its batch, is handled as
// the single request would be (ownership, the key's turn, the batch's budget; with tracing on, a span in
// the page's own trace, as handleTraced gives a single request), in the batch's order, so the pages of one
// batch share one read statement as pages arriving in one turn do (postgres-mailboxes.ts); the replies go
// back together once every page has its answer.
import type { CellMailboxPageBatch, CellMailboxPageBatchReplies, CellReply } from "@cellwire/protocol";
import type { TraceContext, Tracing } from "@cellwire/cluster";
import { orderedReplies } from "./ordered-replies.ts";
import type { CellRequestHandler } from "./request-handler.ts";
import { handleTraced } from "./traced-request.ts";

export function serveMailboxPageBatch(
  handler: Pick<CellRequestHandler, "handleRequest">,
  batch: CellMailboxPageBatch,
  respond: (replies: CellMailboxPageBatchReplies) => void,
  /** With tracing on: the tracing and each page's context from the batch's headers. */
  traced?: { readonly tracing: Tracing; readonly contexts: readonly (TraceContext | undefined)[] },
): void {
  const answerOf = orderedReplies(batch.pages.length, (replies) => respond({ type: "cell.mailboxPageBatchReplies", replies }));
  batch.pages.forEach((page, index) => {
    const answer = answerOf(index);
    const handle = (respondTo: (reply: CellReply) => void): Promise<void> => handler.handleRequest(page, batch.budgetMs, respondTo);
    if (traced === undefined) void handle(answer);
    else void handleTraced(traced.tracing, traced.contexts[index], page.type, handle, answer);
  });
}
