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
  | { readonly kind: "synced"; readonly lastSeq: number }
  /** The events after lastSeq were cut by retention: what the device shows must be reloaded. */
  | { readonly kind: "resync"; readonly lastSeq: number };

export function applyMailboxFrame(lastSeq: number | undefined, frame: MailboxFrame): MailboxOutcome {
  switch (frame.type) {
    case "event":
      if (lastSeq === undefined || frame.seq === lastSeq + 1) return { kind: "emit", lastSeq: frame.seq };
      if (frame.seq <= lastSeq) return { kind: "duplicate", lastSeq };
      return { kind: "gap", lastSeq, expectedSeq: lastSeq + 1, receivedSeq: frame.seq };
    case "synced":
      // A synced below lastSeq cannot take back events the device already holds and emitted.
      return { kind: "synced", lastSeq: lastSeq === undefined ? frame.seq : Math.max(lastSeq, frame.seq) };
    case "resync":
      return { kind: "resync", lastSeq: frame.headSeq };
  }
}

/**
 * The hello's resumeAfterSeq: where the device stopped in this client's life, else the cursor it stored
 * before (the option), else none, which starts the session live at the mailbox head.
 */
export function resumeAfterSeqFor(lastSeq: number | undefined, storedResumeAfterSeq: number | undefined): number | undefined {
  return lastSeq ?? storedResumeAfterSeq;
}
