// A batch of mailbox pages at the worker: each page handed to the single-request path with the batch's
// budget, in order, and the replies back in the batch's order whatever order the pages answer in.
import { describe, expect, it } from "vitest";
import type { CellMailboxPageBatchReplies, CellMailboxPageRequest, CellReply } from "@cellwire/protocol";
import { serveMailboxPageBatch } from "./mailbox-page-batch.ts";
import { orderedReplies } from "./ordered-replies.ts";

const page = (userId: string): CellMailboxPageRequest => ({ type: "cell.mailboxPage", userId, afterSeq: 0, limit: 10 });
const events = (userId: string, headSeq: number): CellReply => ({ type: "cell.mailboxEvents", userId, events: [], headSeq, floorSeq: 0 });

describe("serveMailboxPageBatch", () => {
  it("hands each page to handleRequest in order with the batch's budget, and answers in the batch's order", () => {
    const calls: { userId: string; budgetMs: number; respond: (reply: CellReply) => void }[] = [];
    const handler = {
      handleRequest: (request: CellMailboxPageRequest, budgetMs: number, respond: (reply: CellReply) => void) => {
        calls.push({ userId: request.userId, budgetMs, respond });
        return Promise.resolve();
      },
    } as Parameters<typeof serveMailboxPageBatch>[0];
    const answered: CellMailboxPageBatchReplies[] = [];
    serveMailboxPageBatch(handler, { type: "cell.mailboxPageBatch", budgetMs: 900, pages: [page("a"), page("b"), page("c")] }, (replies) =>
      answered.push(replies),
    );
    expect(calls.map((call) => `${call.userId}@${call.budgetMs}`)).toEqual(["a@900", "b@900", "c@900"]);
    // Answered out of order, and one page twice: nothing leaves until every page has its first answer.
    calls[2]?.respond(events("c", 3));
    calls[0]?.respond(events("a", 1));
    calls[0]?.respond(events("a", 99));
    expect(answered).toEqual([]);
    calls[1]?.respond({ type: "cell.error", code: "not_owner", message: "b is w2's" });
    expect(answered).toEqual([
      {
        type: "cell.mailboxPageBatchReplies",
        replies: [events("a", 1), { type: "cell.error", code: "not_owner", message: "b is w2's" }, events("c", 3)],
      },
    ]);
  });
});

describe("orderedReplies", () => {
  it("gives every reply once, in item order, when the last item answers", () => {
    const done: CellReply[][] = [];
    const answerOf = orderedReplies(2, (replies) => done.push(replies));
    answerOf(1)(events("b", 2));
    expect(done).toEqual([]);
    answerOf(0)(events("a", 1));
    answerOf(0)(events("a", 5));
    expect(done).toEqual([[events("a", 1), events("b", 2)]]);
  });
});
