// A batch of mailbox pages (cell.mailboxPageBatch, docs/decisions/0042): the pages an edge's connects of
// one turn asked of this worker, in one NATS request. Each page is handled as the single request would be
// (ownership, the key's turn, the batch's budget), in the batch's order, so the pages of one batch share
// one read statement as pages arriving in one turn do (postgres-mailboxes.ts); the replies go back
// together once every page has its answer.
import type { CellMailboxPageBatch, CellMailboxPageBatchReplies, CellReply } from "@cellwire/protocol";

/** What serves one parsed request: CellRequestHandler.handleParsed. */
export type ParsedRequestHandler = (input: unknown, respond: (reply: CellReply) => void) => Promise<void>;

export function serveMailboxPageBatch(
  handle: ParsedRequestHandler,
  batch: CellMailboxPageBatch,
  respond: (replies: CellMailboxPageBatchReplies) => void,
): void {
  const replies = new Array<CellReply | undefined>(batch.pages.length);
  let outstanding = batch.pages.length;
  batch.pages.forEach((page, index) => {
    void handle({ ...page, budgetMs: batch.budgetMs }, (reply) => {
      if (replies[index] !== undefined) return;
      replies[index] = reply;
      outstanding -= 1;
      if (outstanding === 0) respond({ type: "cell.mailboxPageBatchReplies", replies: replies as CellReply[] });
    });
  });
}
