// The rules of read and delivered positions, shared by both stores: how a request moves them, and which
// mailboxes hear about the move.
import { receiptEventId, type ReceiptEvent } from "@cellwire/protocol";

export type Positions = { readonly readSeq: number; readonly deliveredSeq: number };

/** Monotonic: a lower seq changes nothing; reading up to a seq means that seq was delivered too. */
export function advancedPositions(current: Positions, position: "read" | "delivered", seq: number): Positions {
  const readSeq = position === "read" ? Math.max(current.readSeq, seq) : current.readSeq;
  return { readSeq, deliveredSeq: Math.max(current.deliveredSeq, seq, readSeq) };
}

export function positionsMoved(before: Positions, after: Positions): boolean {
  return after.readSeq !== before.readSeq || after.deliveredSeq !== before.deliveredSeq;
}

/**
 * Who receives the receipt of `userId`'s move (sorted): every member in a conversation of at most
 * `fanOutMembersMax` members, else the user alone (read state still syncs across their devices); the
 * user's own mailbox only when the read position moved.
 */
export function receiptRecipients(members: readonly string[], userId: string, readMoved: boolean, fanOutMembersMax: number): string[] {
  const audience = members.length <= fanOutMembersMax ? members : [userId];
  return audience.filter((member) => member !== userId || readMoved).sort();
}

export function receiptEventOf(conversationId: string, userId: string, positions: Positions): { eventId: string; event: ReceiptEvent } {
  const event: ReceiptEvent = { kind: "receipt", conversationId, userId, readSeq: positions.readSeq, deliveredSeq: positions.deliveredSeq };
  return { eventId: receiptEventId(event), event };
}
