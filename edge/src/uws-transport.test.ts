import { describe, expect, it } from "vitest";
import type { SendOutcome } from "./session-host.ts";
import { TurnWrites, UwsTransport, type SendOutcomeListener, type TransportSocket } from "./uws-transport.ts";

class FakeSocket implements TransportSocket {
  /** What the socket was asked to do, in order: "cork" … "uncork" around a corked write, "send <frame>", "end <code>". */
  readonly calls: string[] = [];
  /** uWS's status for the next sends (1 written, 0 backpressure, 2 dropped). */
  status = 1;
  /** What getBufferedAmount answers. */
  buffered = 0;
  readonly reported: SendOutcome[] = [];
  private readonly session: SendOutcomeListener = { sendReported: (outcome) => this.reported.push(outcome) };

  send(message: string): number {
    this.calls.push(`send ${message}`);
    return this.status;
  }

  cork(write: () => void): void {
    this.calls.push("cork");
    write();
    this.calls.push("uncork");
  }

  end(code: number): void {
    this.calls.push(`end ${code}`);
  }

  getBufferedAmount(): number {
    return this.buffered;
  }

  getUserData(): { readonly session: SendOutcomeListener } {
    return { session: this.session };
  }
}

/** A turn ends when the test says so. */
function manualTurns(): { readonly turnWrites: TurnWrites; endTurn(): void; readonly scheduled: () => number } {
  let pending: (() => void)[] = [];
  let scheduled = 0;
  const turnWrites = new TurnWrites((flush) => {
    scheduled += 1;
    pending.push(flush);
  });
  return {
    turnWrites,
    scheduled: () => scheduled,
    endTurn: () => {
      const flushes = pending;
      pending = [];
      for (const flush of flushes) flush();
    },
  };
}

/** A transport on a fake socket, its turns ended by the test. */
function oneSocket(): { readonly turns: ReturnType<typeof manualTurns>; readonly socket: FakeSocket; readonly transport: UwsTransport } {
  const turns = manualTurns();
  const socket = new FakeSocket();
  return { turns, socket, transport: new UwsTransport(socket, turns.turnWrites) };
}

describe("UwsTransport", () => {
  it("writes nothing before the turn ends, then one socket's frames in one corked write, in order", () => {
    const { turns, socket, transport } = oneSocket();
    expect(transport.send("ack")).toBe("sent");
    expect(transport.send("event 1")).toBe("sent");
    expect(transport.send("event 2")).toBe("sent");
    expect(socket.calls).toEqual([]);
    turns.endTurn();
    expect(socket.calls).toEqual(["cork", "send ack", "send event 1", "send event 2", "uncork"]);
    expect(socket.reported).toEqual([]);
  });

  it("writes a lone frame uncorked, and each socket once per turn under one scheduled end", () => {
    const turns = manualTurns();
    const [first, second] = [new FakeSocket(), new FakeSocket()];
    const one = new UwsTransport(first, turns.turnWrites);
    const other = new UwsTransport(second, turns.turnWrites);
    one.send("a");
    other.send("b");
    other.send("c");
    expect(turns.scheduled()).toBe(1);
    turns.endTurn();
    expect(first.calls).toEqual(["send a"]);
    expect(second.calls).toEqual(["cork", "send b", "send c", "uncork"]);
    one.send("d");
    expect(turns.scheduled()).toBe(2);
    turns.endTurn();
    expect(first.calls).toEqual(["send a", "send d"]);
  });

  it("writes the queued frames ahead of the close in one corked write, and nothing at the turn's end", () => {
    const { turns, socket, transport } = oneSocket();
    transport.send("error");
    transport.close(4002, "protocol violation");
    expect(socket.calls).toEqual(["cork", "send error", "end 4002", "uncork"]);
    expect(transport.send("late")).toBe("dropped");
    turns.endTurn();
    expect(socket.calls).toHaveLength(4);
    expect(socket.reported).toEqual([]);
  });

  it("drops the frames of a socket the client closed before the turn ended", () => {
    const { turns, socket, transport } = oneSocket();
    transport.send("event");
    // As edge-server.ts marks it on uWS's close event.
    transport.isClosed = true;
    turns.endTurn();
    expect(socket.calls).toEqual([]);
  });

  it("reports a dropped or backpressured write to the session, a written one not", () => {
    const { turns, socket, transport } = oneSocket();
    transport.send("written");
    turns.endTurn();
    socket.status = 0;
    transport.send("backpressured");
    turns.endTurn();
    socket.status = 2;
    transport.send("dropped");
    turns.endTurn();
    expect(socket.reported).toEqual(["backpressure", "dropped"]);
  });

  it("reports the worst outcome of a corked write, and backpressure when the socket kept bytes after the uncork", () => {
    const { turns, socket, transport } = oneSocket();
    transport.send("a");
    transport.send("b");
    socket.buffered = 100;
    turns.endTurn();
    socket.buffered = 0;
    transport.send("c");
    transport.send("d");
    socket.status = 2;
    turns.endTurn();
    transport.send("e");
    transport.send("f");
    socket.status = 1;
    turns.endTurn();
    expect(socket.reported).toEqual(["backpressure", "dropped"]);
  });
});
