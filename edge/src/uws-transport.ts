// A uWS socket as the core's SessionTransport: frames queued within a turn of the event loop and written
// at its end, several to one socket in one write.
import { TurnQueue } from "@cellwire/cluster";
import type { SendOutcome, SessionTransport } from "./session-host.ts";

/** Who hears of a write that failed after `send` had returned (Session.sendReported). */
export interface SendOutcomeListener {
  sendReported(outcome: SendOutcome): void;
}

/** What the transport needs of a uWS WebSocket (uWS.WebSocket<SocketData> has it), so tests can stand in. */
export interface TransportSocket {
  /** uWS: 1 written, 0 written with backpressure built up, 2 dropped. */
  send(message: string, isBinary: boolean, compress: boolean): number;
  cork(write: () => void): unknown;
  end(code: number, reason: string): void;
  getBufferedAmount(): number;
  getUserData(): { readonly session: SendOutcomeListener | undefined };
}

/** The transports with frames waiting in this turn; each is listed once, when its first frame comes. */
export class TurnWrites {
  private readonly waiting: TurnQueue<UwsTransport>;

  /** `schedule`: how the end of the turn is reached (setImmediate in the edge: after this turn's I/O callbacks and their microtasks). */
  constructor(schedule: (flush: () => void) => void) {
    this.waiting = new TurnQueue((turn) => {
      for (const transport of turn) transport.writeWaiting();
    }, schedule);
  }

  list(transport: UwsTransport): void {
    this.waiting.push(transport);
  }
}

/**
 * Frames sent within one turn wait for its end, so the frames one socket gets in that turn leave in one
 * write, corked. A commit batch's replies and its delivery reach the edge in one NATS read (the worker
 * writes them together), so a sender's ack and the echo of its own message, two system calls here and two
 * wake-ups of the client before, are one now; a lone frame is written uncorked, as before (corking costs
 * more than it saves for one: 7.1 against 5.2 µs per send to 500 sockets). The queue lasts one turn and
 * holds what the session wrote in it, which its own limits bound.
 *
 * uWS reports backpressure per write, so `send` answers "sent" for a queued frame and a write that turns
 * out dropped or backpressured is reported to the socket's session (`sendReported`), which decides, as for
 * any send, whether the client reads too slowly.
 */
export class UwsTransport implements SessionTransport {
  isClosed = false;
  /** A frame has arrived on this socket (its hello, unless the client broke the protocol). */
  firstFrameSeen = false;
  /** The frames waiting for the end of the turn with the hello (see HelloBatch); undefined once handed over. */
  waitingFrames: { readonly text: string; readonly isBinary: boolean }[] | undefined;
  /** This turn's frames to write: one as a string (no array for the common case), several as an array. */
  private unwritten: string | string[] | undefined;

  constructor(
    private readonly socket: TransportSocket,
    private readonly turnWrites: TurnWrites,
  ) {}

  send(text: string): SendOutcome {
    if (this.isClosed) return "dropped";
    const unwritten = this.unwritten;
    if (unwritten === undefined) {
      this.unwritten = text;
      this.turnWrites.list(this);
    } else if (typeof unwritten === "string") this.unwritten = [unwritten, text];
    else unwritten.push(text);
    return "sent";
  }

  bufferedBytes(): number {
    return this.isClosed ? 0 : this.socket.getBufferedAmount();
  }

  /** The frames queued, ahead of the close frame in the same write. */
  close(code: number, reason: string): void {
    if (this.isClosed) return;
    this.isClosed = true;
    const unwritten = this.takeUnwritten();
    this.socket.cork(() => {
      if (unwritten !== undefined) this.write(unwritten);
      this.socket.end(code, reason);
    });
  }

  /** TurnWrites, at the end of the turn. */
  writeWaiting(): void {
    const unwritten = this.takeUnwritten();
    // A socket closed meanwhile (by the client, or by close() above, which wrote them) has nothing to write.
    if (unwritten === undefined || this.isClosed) return;
    const outcome = typeof unwritten === "string" ? this.write(unwritten) : this.writeCorked(unwritten);
    if (outcome !== "sent") this.socket.getUserData().session?.sendReported(outcome);
  }

  private takeUnwritten(): string | string[] | undefined {
    const unwritten = this.unwritten;
    this.unwritten = undefined;
    return unwritten;
  }

  private writeCorked(frames: string[]): SendOutcome {
    let outcome: SendOutcome = "sent";
    this.socket.cork(() => {
      outcome = this.write(frames);
    });
    // Corked, a send only fills the cork buffer and reports success; whether the socket took the write is
    // known after the uncork.
    return outcome === "sent" && this.socket.getBufferedAmount() > 0 ? "backpressure" : outcome;
  }

  /** Writes the frames in order; the worst outcome among them. */
  private write(frames: string | string[]): SendOutcome {
    if (typeof frames === "string") return outcomeOf(this.socket.send(frames, false, false));
    let worst: SendOutcome = "sent";
    for (const text of frames) {
      const outcome = outcomeOf(this.socket.send(text, false, false));
      if (outcome === "dropped" || worst === "sent") worst = outcome;
    }
    return worst;
  }
}

function outcomeOf(status: number): SendOutcome {
  return status === 1 ? "sent" : status === 0 ? "backpressure" : "dropped";
}
