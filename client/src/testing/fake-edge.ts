// An in-memory edge for the client's unit tests: fake sockets that the test opens, feeds and drops by
// hand, and a server that answers hello and requests like the real edge (deduplicating sends by
// clientMessageId) and keeps the user's mailbox: after the welcome it replays the backlog after the
// hello's resumeAfterSeq (or answers resync below the retention floor), sends synced, then live events.
// Every frame the client writes is checked with the protocol's own decoder. Several edges can share one
// FakeCell (the user's mailbox and the messages deduplicated by clientMessageId), as real edges share the
// cells behind them; fakeEdgeNetwork routes each socket to the edge of its URL, so a test can kill one.
import {
  decodeClientFrame,
  protocolVersion,
  type ClientFrame,
  type ClientRequestFrame,
  type ConversationSummary,
  type HelloFrame,
  type MailboxEvent,
  type Message,
  type PresenceState,
  type SequencedEvent,
  type ServerFrame,
} from "@cellwire/protocol";
import type { WebSocketConstructor, WebSocketLike } from "../websocket-like.ts";

type SocketEvents = {
  open: () => void;
  error: () => void;
  message: (event: { readonly data: unknown }) => void;
  close: (event: { readonly code: number; readonly reason: string }) => void;
};
type SocketEventName = keyof SocketEvents;

/** Reply with this frame, with the built-in behaviour ("default"), or not at all ("ignore"). */
export type RequestHandler = (frame: ClientRequestFrame, socket: FakeSocket) => ServerFrame | "default" | "ignore";
export type HelloHandler = (frame: HelloFrame, socket: FakeSocket) => "welcome" | "ignore" | { readonly closeCode: number };

export class FakeSocket implements WebSocketLike {
  readyState: "connecting" | "open" | "closed" = "connecting";
  readonly sentTexts: string[] = [];
  /** The code the client closed this socket with, if it did. */
  closedByClientWithCode: number | null = null;
  private readonly listeners: { [E in SocketEventName]: SocketEvents[E][] } = { open: [], error: [], message: [], close: [] };

  constructor(
    readonly url: string,
    private readonly edge: FakeEdge,
  ) {
    edge.sockets.push(this);
    // A dead edge refuses the connection: browsers and `ws` report error, then close 1006.
    if (edge.down) queueMicrotask(() => this.drop(abnormalCloseCode));
    else if (edge.autoAccept) queueMicrotask(() => this.accept());
  }

  addEventListener(type: "open", listener: () => void): void;
  addEventListener(type: "error", listener: () => void): void;
  addEventListener(type: "message", listener: (event: { readonly data: unknown }) => void): void;
  addEventListener(type: "close", listener: (event: { readonly code: number; readonly reason: string }) => void): void;
  addEventListener(type: SocketEventName, listener: SocketEvents[SocketEventName]): void {
    (this.listeners[type] as SocketEvents[SocketEventName][]).push(listener);
  }

  send(data: string): void {
    // Browsers throw while connecting; after close they drop the data silently.
    if (this.readyState === "connecting") throw new Error("InvalidStateError: still connecting");
    if (this.readyState === "closed") return;
    this.sentTexts.push(data);
    queueMicrotask(() => this.edge.receive(this, data));
  }

  close(code?: number): void {
    if (this.readyState === "closed") return;
    this.readyState = "closed";
    this.closedByClientWithCode = code ?? 1005;
    queueMicrotask(() => this.emitClose(code ?? 1005, ""));
  }

  // Server side -------------------------------------------------------------------------------------

  accept(): void {
    if (this.readyState !== "connecting") return;
    this.readyState = "open";
    for (const listener of [...this.listeners.open]) listener();
  }

  /** Delivers a frame (or raw text, or a non-string payload) to the client. */
  deliver(frame: ServerFrame | string | Uint8Array): void {
    if (this.readyState !== "open") return;
    const data = typeof frame === "string" || frame instanceof Uint8Array ? frame : JSON.stringify(frame);
    for (const listener of [...this.listeners.message]) listener({ data });
  }

  /** The server (or the network) ends the connection with `code`. */
  drop(code: number, reason = ""): void {
    if (this.readyState === "closed") return;
    this.readyState = "closed";
    for (const listener of [...this.listeners.error]) listener();
    this.emitClose(code, reason);
  }

  private emitClose(code: number, reason: string): void {
    for (const listener of [...this.listeners.close]) listener({ code, reason });
  }
}

const abnormalCloseCode = 1006;

/**
 * What the edges of one user share: the mailbox and the messages, stored once per clientMessageId as the
 * real cell does. Appends reach every edge attached to it, and each edge sends them to its synced sockets.
 */
export class FakeCell {
  /** The user's mailbox: the event with seq n is at index n - 1. */
  readonly mailbox: SequencedEvent[] = [];
  private readonly storedByClientMessageId = new Map<string, Message>();
  private readonly logs = new Map<string, Message[]>();
  private readonly edges: FakeEdge[] = [];

  constructor(readonly userId = "alice") {}

  attach(edge: FakeEdge): void {
    this.edges.push(edge);
  }

  storedMessages(conversationId: string): readonly Message[] {
    return this.logs.get(conversationId) ?? [];
  }

  store(conversationId: string, clientMessageId: string, body: string, senderUserId: string): Message {
    const existing = this.storedByClientMessageId.get(clientMessageId);
    if (existing !== undefined) return existing;
    const log = this.logs.get(conversationId) ?? [];
    const message: Message = {
      conversationId,
      messageId: `m${this.storedByClientMessageId.size + 1}`,
      seq: log.length + 1,
      senderUserId,
      senderDeviceId: "device1",
      clientMessageId,
      body,
      sentAtMs: 1_700_000_000_000 + log.length,
    };
    log.push(message);
    this.logs.set(conversationId, log);
    this.storedByClientMessageId.set(clientMessageId, message);
    this.append({ kind: "message", message });
    return message;
  }

  append(event: MailboxEvent): SequencedEvent {
    const sequenced: SequencedEvent = { seq: this.mailbox.length + 1, event };
    this.mailbox.push(sequenced);
    for (const edge of this.edges) edge.deliverLiveEvent(sequenced);
    return sequenced;
  }
}

export class FakeEdge {
  readonly sockets: FakeSocket[] = [];
  readonly received: { readonly socket: FakeSocket; readonly frame: ClientFrame }[] = [];
  /** Texts the client sent that the protocol's decoder refused: a test expects none. */
  readonly invalidTexts: string[] = [];
  autoAccept = true;
  heartbeatIntervalMs = 30_000;
  onHello: HelloHandler = () => "welcome";
  onRequest: RequestHandler = () => "default";
  /** After a welcome, replay the backlog and send synced; false leaves the session's mailbox to the test. */
  syncAfterWelcome = true;
  /** A misbehaving edge: each replay starts this many seqs before the hello's resumeAfterSeq. */
  replayOverlap = 0;
  /** Events up to this seq were cut by retention; a resume below it is answered with resync. */
  retentionFloorSeq = 0;
  /** false: appended events reach no socket live (as if the edge lost them); resumes still replay them. */
  deliverLive = true;
  /** The process is gone: new connections are refused (error, then close 1006). See kill(). */
  down = false;
  /** What watchPresence answers for each user (offline, never seen, when absent). */
  readonly presence = new Map<string, PresenceState>();
  readonly WebSocket: WebSocketConstructor;
  readonly cell: FakeCell;
  /** The last mailbox seq sent on each synced socket; live events go to these sockets. */
  private readonly socketSeqs = new Map<FakeSocket, number>();

  /** `cell`: another edge's cell, to serve the same user from several edges. */
  constructor(
    readonly userId = "alice",
    cell?: FakeCell,
  ) {
    this.cell = cell ?? new FakeCell(userId);
    this.cell.attach(this);
    const edge = this;
    this.WebSocket = class extends FakeSocket {
      constructor(url: string) {
        super(url, edge);
      }
    };
  }

  get lastSocket(): FakeSocket {
    const socket = this.sockets.at(-1);
    if (socket === undefined) throw new Error("no socket was opened");
    return socket;
  }

  framesOfType<T extends ClientFrame["type"]>(type: T): Extract<ClientFrame, { type: T }>[] {
    return this.received.map((entry) => entry.frame).filter((frame): frame is Extract<ClientFrame, { type: T }> => frame.type === type);
  }

  /** The user's mailbox (its cell's): the event with seq n is at index n - 1. */
  get mailbox(): readonly SequencedEvent[] {
    return this.cell.mailbox;
  }

  get mailboxHeadSeq(): number {
    return this.cell.mailbox.length;
  }

  storedMessages(conversationId: string): readonly Message[] {
    return this.cell.storedMessages(conversationId);
  }

  /** As a SIGKILL: every connection drops at once without a close frame (1006), and new ones are refused. */
  kill(): void {
    this.down = true;
    for (const socket of this.sockets) socket.drop(abnormalCloseCode);
  }

  receive(socket: FakeSocket, text: string): void {
    const decoded = decodeClientFrame(text);
    if (!decoded.ok) {
      this.invalidTexts.push(text);
      return;
    }
    const frame = decoded.frame;
    this.received.push({ socket, frame });
    if (frame.type === "hello") {
      const outcome = this.onHello(frame, socket);
      if (outcome === "welcome") {
        socket.deliver(this.welcomeFor(frame));
        if (this.syncAfterWelcome) this.sync(socket, frame.resumeAfterSeq);
      } else if (outcome !== "ignore") socket.drop(outcome.closeCode);
      return;
    }
    const reply = this.onRequest(frame, socket);
    if (reply === "ignore") return;
    socket.deliver(reply === "default" ? this.defaultReply(frame) : reply);
  }

  /** The user's read and delivered positions per conversation, as `read` and `delivered` left them. */
  readonly positions = new Map<string, { readSeq: number; deliveredSeq: number }>();

  welcomeFor(hello: HelloFrame): ServerFrame {
    return {
      type: "welcome",
      protocolVersion,
      sessionId: `s${this.sockets.length}`,
      userId: this.userId,
      deviceId: hello.deviceId ?? "device1",
      cellId: "a",
      heartbeatIntervalMs: this.heartbeatIntervalMs,
    };
  }

  defaultReply(frame: ClientRequestFrame): ServerFrame {
    switch (frame.type) {
      case "send": {
        const message = this.store(frame.conversationId, frame.clientMessageId, frame.body);
        return { type: "ack", requestId: frame.requestId, conversationId: message.conversationId, messageId: message.messageId, seq: message.seq, sentAtMs: message.sentAtMs };
      }
      case "openDirect":
        return { type: "conversation", requestId: frame.requestId, conversation: this.summary(directConversationId, "direct", null, [this.userId, frame.peerUserId]) };
      case "createGroup":
        return { type: "conversation", requestId: frame.requestId, conversation: this.summary(groupConversationId, "group", frame.title, [this.userId, ...frame.memberUserIds]) };
      case "addMembers":
        return { type: "conversation", requestId: frame.requestId, conversation: this.summary(frame.conversationId, "group", "group", [this.userId, ...frame.userIds]) };
      case "history": {
        const before = frame.beforeSeq ?? Number.MAX_SAFE_INTEGER;
        const older = this.storedMessages(frame.conversationId).filter((message) => message.seq < before);
        const limit = frame.limit ?? 50;
        return { type: "historyPage", requestId: frame.requestId, conversationId: frame.conversationId, messages: older.slice(-limit), hasMore: older.length > limit };
      }
      case "ping":
        return { type: "pong", requestId: frame.requestId };
      case "typing":
        return { type: "typingAck", requestId: frame.requestId };
      case "read":
      case "delivered": {
        // Monotonic like the cell's positions; the receipt events are the test's to append.
        const before = this.positions.get(frame.conversationId) ?? { readSeq: 0, deliveredSeq: 0 };
        const readSeq = frame.type === "read" ? Math.max(before.readSeq, frame.seq) : before.readSeq;
        const after = { readSeq, deliveredSeq: Math.max(before.deliveredSeq, frame.seq, readSeq) };
        this.positions.set(frame.conversationId, after);
        return { type: "receiptAck", requestId: frame.requestId, conversationId: frame.conversationId, ...after };
      }
      case "watchPresence":
        return {
          type: "presenceSnapshot",
          requestId: frame.requestId,
          users: frame.userIds.map((userId) => this.presence.get(userId) ?? { userId, status: "offline", changedAtMs: null }),
        };
    }
  }

  /**
   * Stores a message once per clientMessageId, as the real cell does, and appends it to the user's
   * mailbox (sent live to every synced socket). `senderUserId` other than the user's: a peer's message.
   */
  store(conversationId: string, clientMessageId: string, body: string, senderUserId = this.userId): Message {
    return this.cell.store(conversationId, clientMessageId, body, senderUserId);
  }

  /** Appends to the cell's mailbox, which every edge of the cell sends live to its synced open sockets. */
  append(event: MailboxEvent): SequencedEvent {
    return this.cell.append(event);
  }

  /** Called by the cell for each appended event. */
  deliverLiveEvent(sequenced: SequencedEvent): void {
    if (!this.deliverLive) return;
    for (const [socket, seq] of this.socketSeqs) {
      if (socket.readyState !== "open") this.socketSeqs.delete(socket);
      else if (seq === sequenced.seq - 1) this.sendEvents(socket, [sequenced]);
    }
  }

  /** What the real edge does after a welcome: the backlog after resumeAfterSeq (or resync), then synced. */
  sync(socket: FakeSocket, resumeAfterSeq: number | undefined): void {
    const headSeq = this.mailboxHeadSeq;
    if (resumeAfterSeq !== undefined && resumeAfterSeq < this.retentionFloorSeq) {
      socket.deliver({ type: "resync", headSeq });
    } else if (resumeAfterSeq !== undefined) {
      this.sendEvents(socket, this.mailbox.slice(Math.max(0, resumeAfterSeq - this.replayOverlap)));
    }
    socket.deliver({ type: "synced", seq: headSeq });
    this.socketSeqs.set(socket, headSeq);
  }

  /** Sends events as they are, whatever their order: tests use it to play a misbehaving edge. */
  sendEvents(socket: FakeSocket, events: readonly SequencedEvent[]): void {
    for (const { seq, event } of events) socket.deliver({ type: "event", seq, event });
    const last = events.at(-1);
    if (last !== undefined && this.socketSeqs.has(socket)) this.socketSeqs.set(socket, last.seq);
  }

  private summary(conversationId: string, kind: "direct" | "group", title: string | null, memberUserIds: string[]): ConversationSummary {
    return { conversationId, kind, title, memberUserIds, lastSeq: this.storedMessages(conversationId).length };
  }
}

/**
 * A WebSocket constructor that reaches the edge listening at each URL, as several edge ports on one
 * machine would. A URL no edge listens at is refused like a dead edge's.
 */
export function fakeEdgeNetwork(edgesByUrl: ReadonlyMap<string, FakeEdge>): WebSocketConstructor {
  const nowhere = new FakeEdge("nobody");
  nowhere.down = true;
  return class extends FakeSocket {
    constructor(url: string) {
      super(url, edgesByUrl.get(url) ?? nowhere);
    }
  };
}

export const directConversationId = `d-${"A".repeat(22)}`;
export const groupConversationId = `g-${"B".repeat(22)}`;

/** Lets every queued microtask and the fakes' deliveries run; no time passes on any clock. */
export async function flush(): Promise<void> {
  for (let round = 0; round < 3; round++) await new Promise<void>((resolve) => setImmediate(resolve));
}
