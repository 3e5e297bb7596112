// The replies to a batch's items (cell.sendBatch, cell.mailboxPageBatch), handed back together, in the
// batch's order, once every item has its own. An item's later answers are ignored: its first one stands.
import type { CellReply } from "@cellwire/protocol";

/** Returns the answer function of item `index`; `done` gets every reply once the last item has answered. */
export function orderedReplies(count: number, done: (replies: CellReply[]) => void): (index: number) => (reply: CellReply) => void {
  const replies = new Array<CellReply | undefined>(count);
  let outstanding = count;
  return (index) => (reply) => {
    if (replies[index] !== undefined) return;
    replies[index] = reply;
    outstanding -= 1;
    if (outstanding === 0) done(replies as CellReply[]);
  };
}
