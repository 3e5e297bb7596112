// An in-memory edge for the client's unit tests: fake sockets that the test opens, feeds and drops by
// hand, and a server that speaks protocol 2 like the real edge (docs/decisions/0009): it answers hello and
// requests (deduplicating sends by clientMessageId), keeps the user's mailbox (joined and receipt events)
// and each conversation's log. After the welcome of a resuming hello it replays each listed conversation
// after its cursor, the mailbox after resumeAfterSeq (or answers resync below the retention floor, beyond
// the head, or for another mailbox incarnation) with each replayed joined conversation from its join
// point, then sends synced, then live events and messages, per conversation gapless from the session's start point. Every frame the client writes is
// checked with the protocol's own decoder. Several edges can share one FakeCell (the mailbox and the
// logs), as real edges share the cells behind them; fakeEdgeNetwork routes each socket to the edge of its
// URL, so a test can kill one.
import {
  decodeClientFrame,
  protocolVersion,
  type ClientFrame,
  type ClientRequestFrame,
  type ConversationKind,
  type ConversationSummary,
  type HelloFrame,
  type MailboxEvent,
  type Message,
  type PresenceState,
  type SequencedEvent,
  type ServerFrame,
} from "@cellwire/protocol";
import type { WebSocketConstructor, WebSocketLike } from "../src/websocket-like.ts";

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
 * What the edges of one user share: the mailbox, the conversations' logs (each message stored once per
 * clientMessageId, as the real cell does) and the user's join point in each conversation. Appends and
 * stored messages reach every edge attached to it, and each edge sends them to its synced sockets.
 */
export class FakeCell {
  /** The user's mailbox: the event with seq n is at index n - 1. */
  readonly mailbox: SequencedEvent[] = [];
  /**
   * The mailbox's incarnation (docs/decisions/0021), named on synced and resync; undefined plays an edge
   * or cell before 0021. Set another one to play a restored or re-created mailbox.
   */
  mailboxIncarnation: string | undefined = undefined;
  private readonly storedByClientMessageId = new Map<string, Message>();
  private readonly logs = new Map<string, Message[]>();
  /** Conversation → the user's join point (afterSeq of the joined event); 0 for one never joined. */
  private readonly joinPoints = new Map<string, number>();
  private readonly edges: FakeEdge[] = [];

  constructor(readonly userId = "alice") {}

  attach(edge: FakeEdge): void {
    this.edges.push(edge);
  }

  storedMessages(conversationId: string): readonly Message[] {
    return this.logs.get(conversationId) ?? [];
  }

  joinPointOf(conversationId: string): number {
    return this.joinPoints.get(conversationId) ?? 0;
  }

  /**
   * The user becomes a member (a joined event with the conversation's last seq as the join point), unless
   * already one. Returns the appended event, if any.
   */
  join(
    conversationId: string,
    details: { readonly conversationKind?: ConversationKind; readonly title?: string | null; readonly addedByUserId?: string } = {},
  ): SequencedEvent | undefined {
    if (this.joinPoints.has(conversationId)) return undefined;
    return this.append({
      kind: "joined",
      conversationId,
      conversationKind: details.conversationKind ?? (conversationId.startsWith("g-") ? "group" : "direct"),
      title: details.title ?? null,
      afterSeq: this.storedMessages(conversationId).length,
      addedByUserId: details.addedByUserId ?? this.userId,
    });
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
    for (const edge of this.edges) edge.deliverLiveMessage(message);
    return message;
  }

  /** Appends to the mailbox; a joined event also records the user's join point in its conversation. */
  append(event: MailboxEvent): SequencedEvent {
    const sequenced: SequencedEvent = { seq: this.mailbox.length + 1, event };
    this.mailbox.push(sequenced);
    if (event.kind === "joined" && !this.joinPoints.has(event.conversationId)) this.joinPoints.set(event.conversationId, event.afterSeq);
    for (const edge of this.edges) edge.deliverLiveEvent(sequenced);
    return sequenced;
  }
}

/** What an edge keeps per synced session: where it stands in the mailbox and in each conversation. */
type FakeSession = {
  mailboxSeq: number;
  /** The hello had resumeAfterSeq: a conversation without a cursor is read from the user's join point. */
  readonly resumed: boolean;
  /** Conversation → the last seq sent on this session. */
  readonly conversationSeqs: Map<string, number>;
};

export class FakeEdge {
  readonly sockets: FakeSocket[] = [];
  readonly received: { readonly socket: FakeSocket; readonly frame: ClientFrame }[] = [];
  /** Texts the client sent that the protocol's decoder refused: a test expects none. */
  readonly invalidTexts: string[] = [];
  autoAccept = true;
  heartbeatIntervalMs = 30_000;
  /**
   * An edge that enforces token expiry and accepts `refresh`: its welcome carries tokenExpiresAtMs, read
   * from the token by `expiresAtMsOfToken`, and a refresh is answered `refreshed` with the new token's.
   * false: an older edge, which knows no `refresh` (unknown_frame_type).
   */
  refreshSupported = false;
  expiresAtMsOfToken: (token: string) => number = () => Number.MAX_SAFE_INTEGER;
  onHello: HelloHandler = () => "welcome";
  onRequest: RequestHandler = () => "default";
  /** After a welcome, replay the backlog and send synced; false leaves the session's backlog to the test. */
  syncAfterWelcome = true;
  /**
   * A misbehaving edge: each replay starts this many seqs before the hello's resumeAfterSeq, and each
   * conversation's this many before its cursor or join point.
   */
  replayOverlap = 0;
  /** Events up to this seq were cut by retention; a resume below it is answered with resync. */
  retentionFloorSeq = 0;
  /**
   * false: appended events and stored messages reach no socket live (as if the edge lost them); resumes
   * still replay them.
   */
  deliverLive = true;
  /** The process is gone: new connections are refused (error, then close 1006). See kill(). */
  down = false;
  /** What watchPresence answers for each user (offline, never seen, when absent). */
  readonly presence = new Map<string, PresenceState>();
  readonly WebSocket: WebSocketConstructor;
  readonly cell: FakeCell;
  /** Each synced socket's session; live events and messages go to these sockets. */
  private readonly sessions = new Map<FakeSocket, FakeSession>();

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
        if (this.syncAfterWelcome) this.sync(socket, frame);
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
      ...(this.refreshSupported ? { tokenExpiresAtMs: this.expiresAtMsOfToken(hello.token) } : {}),
    };
  }

  defaultReply(frame: ClientRequestFrame): ServerFrame {
    switch (frame.type) {
      case "send": {
        const message = this.store(frame.conversationId, frame.clientMessageId, frame.body);
        return {
          type: "ack",
          requestId: frame.requestId,
          conversationId: message.conversationId,
          messageId: message.messageId,
          seq: message.seq,
          sentAtMs: message.sentAtMs,
        };
      }
      case "openDirect":
        // The first open makes the user a member, as the cell does: a joined event in the mailbox.
        this.cell.join(directConversationId, { conversationKind: "direct" });
        return {
          type: "conversation",
          requestId: frame.requestId,
          conversation: this.summary(directConversationId, "direct", null, [this.userId, frame.peerUserId]),
        };
      case "createGroup":
        this.cell.join(groupConversationId, { conversationKind: "group", title: frame.title });
        return {
          type: "conversation",
          requestId: frame.requestId,
          conversation: this.summary(groupConversationId, "group", frame.title, [this.userId, ...frame.memberUserIds]),
        };
      case "addMembers":
        return {
          type: "conversation",
          requestId: frame.requestId,
          conversation: this.summary(frame.conversationId, "group", "group", [this.userId, ...frame.userIds]),
        };
      case "history": {
        const before = frame.beforeSeq ?? Number.MAX_SAFE_INTEGER;
        const older = this.storedMessages(frame.conversationId).filter((message) => message.seq < before);
        const limit = frame.limit ?? 50;
        return {
          type: "historyPage",
          requestId: frame.requestId,
          conversationId: frame.conversationId,
          messages: older.slice(-limit),
          hasMore: older.length > limit,
        };
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
      case "refresh":
        if (!this.refreshSupported)
          return {
            type: "error",
            requestId: frame.requestId,
            code: "unknown_frame_type",
            message: "$.type is not a known frame type",
            retryable: false,
          };
        return { type: "refreshed", requestId: frame.requestId, tokenExpiresAtMs: this.expiresAtMsOfToken(frame.token) };
      case "watchPresence":
        return {
          type: "presenceSnapshot",
          requestId: frame.requestId,
          users: frame.userIds.map((userId) => this.presence.get(userId) ?? { userId, status: "offline", changedAtMs: null }),
        };
    }
  }

  /**
   * Stores a message once per clientMessageId in its conversation's log, as the real cell does, and sends
   * it live to every synced socket. `senderUserId` other than the user's: a peer's message.
   */
  store(conversationId: string, clientMessageId: string, body: string, senderUserId = this.userId): Message {
    return this.cell.store(conversationId, clientMessageId, body, senderUserId);
  }

  /** Appends to the cell's mailbox, which every edge of the cell sends live to its synced open sockets. */
  append(event: MailboxEvent): SequencedEvent {
    return this.cell.append(event);
  }

  /**
   * Called by the cell for each appended event: sent to each session whose last mailbox seq precedes it.
   * A joined event makes the session follow its conversation from the join point, as the real edge does.
   */
  deliverLiveEvent(sequenced: SequencedEvent): void {
    if (!this.deliverLive) return;
    for (const [socket, session] of this.sessions) {
      if (socket.readyState !== "open") {
        this.sessions.delete(socket);
        continue;
      }
      if (session.mailboxSeq !== sequenced.seq - 1) continue;
      this.sendEvents(socket, [sequenced]);
      const { event } = sequenced;
      if (event.kind !== "joined" || session.conversationSeqs.has(event.conversationId)) continue;
      session.conversationSeqs.set(event.conversationId, event.afterSeq);
      this.sendMessages(socket, this.storedMessages(event.conversationId).slice(event.afterSeq), session);
    }
  }

  /**
   * Called by the cell for each stored message. A session that follows the conversation gets it when it
   * is next; one that does not yet reads the log from the user's join point (a resumed session) or takes
   * it as the start (a live one), as the real edge does. A session that missed one (deliverLive false)
   * gets nothing more of the conversation: the client must notice the gap.
   */
  deliverLiveMessage(message: Message): void {
    if (!this.deliverLive) return;
    for (const [socket, session] of this.sessions) {
      if (socket.readyState !== "open") {
        this.sessions.delete(socket);
        continue;
      }
      const cursor = session.conversationSeqs.get(message.conversationId);
      if (cursor === message.seq - 1) this.sendMessages(socket, [message]);
      else if (cursor === undefined) {
        const startSeq = session.resumed
          ? Math.max(0, this.cell.joinPointOf(message.conversationId) - this.replayOverlap)
          : message.seq - 1;
        this.sendMessages(socket, this.storedMessages(message.conversationId).slice(startSeq, message.seq));
      }
    }
  }

  /**
   * What the real edge does after a welcome. Resuming (resumeAfterSeq set): each listed conversation after
   * its cursor, then the mailbox after resumeAfterSeq (or resync below the retention floor) with each
   * replayed joined conversation from its join point, then synced. Otherwise synced at the head at once.
   */
  sync(socket: FakeSocket, hello: Pick<HelloFrame, "resumeAfterSeq" | "conversations" | "mailboxIncarnation">): void {
    const headSeq = this.mailboxHeadSeq;
    const { mailboxIncarnation } = this.cell;
    const named = mailboxIncarnation === undefined ? {} : { mailboxIncarnation };
    const otherMailbox =
      hello.mailboxIncarnation !== undefined && mailboxIncarnation !== undefined && hello.mailboxIncarnation !== mailboxIncarnation;
    // As the real edge: another mailbox's seq starts over from the floor (0 here), a seq beyond the head resyncs at it.
    const resumeAfterSeq = otherMailbox ? 0 : hello.resumeAfterSeq;
    const session: FakeSession = { mailboxSeq: headSeq, resumed: resumeAfterSeq !== undefined, conversationSeqs: new Map() };
    this.sessions.delete(socket);
    if (resumeAfterSeq !== undefined) {
      for (const { conversationId, afterSeq } of hello.conversations ?? []) {
        session.conversationSeqs.set(conversationId, afterSeq);
        this.sendMessages(socket, this.storedMessages(conversationId).slice(Math.max(0, afterSeq - this.replayOverlap)), session);
      }
      if (otherMailbox) socket.deliver({ type: "resync", headSeq: 0, ...named });
      if (resumeAfterSeq < this.retentionFloorSeq || resumeAfterSeq > headSeq) {
        socket.deliver({ type: "resync", headSeq, ...named });
      } else {
        for (const sequenced of this.mailbox.slice(Math.max(0, resumeAfterSeq - this.replayOverlap))) {
          this.sendEvents(socket, [sequenced]);
          const { event } = sequenced;
          if (event.kind !== "joined" || session.conversationSeqs.has(event.conversationId)) continue;
          session.conversationSeqs.set(event.conversationId, event.afterSeq);
          this.sendMessages(
            socket,
            this.storedMessages(event.conversationId).slice(Math.max(0, event.afterSeq - this.replayOverlap)),
            session,
          );
        }
      }
    }
    socket.deliver({ type: "synced", seq: headSeq, ...named });
    this.sessions.set(socket, session);
  }

  /** Sends events as they are, whatever their order: tests use it to play a misbehaving edge. */
  sendEvents(socket: FakeSocket, events: readonly SequencedEvent[]): void {
    for (const { seq, event } of events) socket.deliver({ type: "event", seq, event });
    const last = events.at(-1);
    const session = this.sessions.get(socket);
    if (last !== undefined && session !== undefined) session.mailboxSeq = last.seq;
  }

  /**
   * Sends messages as they are, whatever their order (tests use it to play a misbehaving edge); the
   * session then follows each conversation from the last one sent.
   */
  sendMessages(socket: FakeSocket, messages: readonly Message[], session = this.sessions.get(socket)): void {
    for (const message of messages) {
      socket.deliver({ type: "message", message });
      session?.conversationSeqs.set(message.conversationId, message.seq);
    }
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
