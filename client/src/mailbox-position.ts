// Where the device stands in its user's mailbox, pure: what each mailbox frame means for `lastSeq`, which
// events to emit, which to drop as duplicates, and which reveal a gap. cellwire-client.ts performs the
// outcome; client/BEHAVIOUR.md ("Mailbox") is the table these functions follow.
import type { EventFrame, ResyncFrame, SyncedFrame } from "@cellwire/protocol";

export type MailboxFrame = EventFrame | SyncedFrame | ResyncFrame;

/** Every outcome carries the lastSeq after the frame; it never goes back to unknown. */
export type MailboxOutcome =
  /** The next event in mailbox order (or the first one seen): emit it. */
  | { readonly kind: "emit"; readonly lastSeq: number }
  /** The device already holds this seq: drop it silently. */
  | { readonly kind: "duplicate"; readonly lastSeq: number }
  /** Seqs between lastSeq and this event were skipped: emit nothing and resume from lastSeq. */
  | { readonly kind: "gap"; readonly lastSeq: number; readonly expectedSeq: number; readonly receivedSeq: number }
  /** `mailboxIncarnation`: the mailbox lastSeq now counts in, as the frame names it (docs/decisions/0021). */
  | { readonly kind: "synced"; readonly lastSeq: number; readonly mailboxIncarnation: string | undefined }
  /**
   * The device's seq meant nothing in the mailbox (events cut by retention, a seq beyond the head, another
   * mailbox's seq): what the device shows must be reloaded; it continues from lastSeq of mailboxIncarnation.
   */
  | { readonly kind: "resync"; readonly lastSeq: number; readonly mailboxIncarnation: string | undefined };

export function applyMailboxFrame(lastSeq: number | undefined, frame: MailboxFrame): MailboxOutcome {
  switch (frame.type) {
    case "event":
      if (lastSeq === undefined || frame.seq === lastSeq + 1) return { kind: "emit", lastSeq: frame.seq };
      if (frame.seq <= lastSeq) return { kind: "duplicate", lastSeq };
      return { kind: "gap", lastSeq, expectedSeq: lastSeq + 1, receivedSeq: frame.seq };
    case "synced":
      // A synced below lastSeq cannot take back events the device already holds and emitted.
      // The incarnation is the frame's, absent included: an edge names none while the user has no mailbox,
      // and a stored one would then be another mailbox's once the user gets one.
      return {
        kind: "synced",
        lastSeq: lastSeq === undefined ? frame.seq : Math.max(lastSeq, frame.seq),
        mailboxIncarnation: frame.mailboxIncarnation,
      };
    case "resync":
      return { kind: "resync", lastSeq: frame.headSeq, mailboxIncarnation: frame.mailboxIncarnation };
  }
}

/**
 * The hello's resumeAfterSeq: where the device stopped in this client's life, else the cursor it stored
 * before (the option), else none, which starts the session live at the mailbox head.
 */
export function resumeAfterSeqFor(lastSeq: number | undefined, storedResumeAfterSeq: number | undefined): number | undefined {
  return lastSeq ?? storedResumeAfterSeq;
}

/**
 * The hello's mailbox cursor: resumeAfterSeq (see resumeAfterSeqFor) and, with it, the incarnation of the
 * mailbox it counts in when known. `mailboxIncarnation` is what the last synced or resync named, else the
 * stored one (the option); it is only ever one an edge sent, so it goes only to edges that know the field.
 */
export function helloMailboxCursor(
  lastSeq: number | undefined,
  storedResumeAfterSeq: number | undefined,
  mailboxIncarnation: string | undefined,
): { readonly resumeAfterSeq?: number; readonly mailboxIncarnation?: string } {
  const resumeAfterSeq = resumeAfterSeqFor(lastSeq, storedResumeAfterSeq);
  if (resumeAfterSeq === undefined) return {};
  return mailboxIncarnation === undefined ? { resumeAfterSeq } : { resumeAfterSeq, mailboxIncarnation };
}
