// The SDK's client: the I/O shell around connection-machine.ts, mailbox-position.ts and
// conversation-positions.ts. It owns the socket, the timers and the pending requests; every decision about
// the connection is the machine's, every decision about mailbox frames (emit, drop, gap) is
// mailbox-position's, and about message frames conversation-positions'. client/BEHAVIOUR.md is the
// contract, and the tests follow it.
import {
  decodeServerFrame,
  frameBytesMax,
  messageBodyLengthMax,
  isConversationId,
  isDeviceId,
  mailboxIncarnationPattern,
  isUserId,
  presenceWatchUsersMax,
  protocolVersion,
  requestIdLengthMax,
  resumeConversationsMax,
  standardCloseCodes,
  tokenLengthMax,
  type ConversationSummary,
  type ErrorFrame,
  type EventFrame,
  type HelloFrame,
  type JoinedEvent,
  type Message,
  type MessageFrame,
  type PresenceState,
  type ReceiptEvent,
  type ResyncFrame,
  type ServerFrame,
  type SyncedFrame,
  type WelcomeFrame,
} from "@cellwire/protocol";
import { normaliseBackoffOptions, retryDelayMs, type BackoffOptions, type RandomSource } from "./backoff.ts";
import { createClientMessageId } from "./client-message-id.ts";
import { DeliveredReporter } from "./delivered-reporter.ts";
import { systemClock, type CancelTimer, type Clock } from "./clock.ts";
import { ConversationPositions, conversationCursorsMax } from "./conversation-positions.ts";
import {
  initialConnectionState,
  transition,
  type ClosedReason,
  type ConnectionEffect,
  type ConnectionInput,
  type ConnectionMachineOptions,
  type ConnectionState,
  type ConnectionStateName,
  type StateChangeDetail,
  type TokenReason,
} from "./connection-machine.ts";
import { normaliseEdgeUrls } from "./edge-urls.ts";
import { CellwireClientError } from "./errors.ts";
import { Listeners, type Unsubscribe } from "./listeners.ts";
import { applyMailboxFrame, helloMailboxCursor, type MailboxFrame } from "./mailbox-position.ts";
import { PresenceWatch } from "./presence-watch.ts";
import { isIdempotent, isReplyOf, type RequestBody, type RequestBodyOf, type RequestKind, type ReplyFrameOf } from "./request-kinds.ts";
import { tokenRefreshDelayMs } from "./token-refresh.ts";
import { TypingIndicators, type TypingIndicator, type TypingStopped } from "./typing-indicators.ts";
import { resolveWebSocketConstructor, type WebSocketConstructor, type WebSocketLike } from "./websocket-like.ts";

export type Welcome = Omit<WelcomeFrame, "type">;
export type Ack = { conversationId: string; messageId: string; seq: number; sentAtMs: number; clientMessageId: string };
export type HistoryPage = { conversationId: string; messages: Message[]; hasMore: boolean };
export type StateChange = {
  readonly state: ConnectionStateName;
  readonly previousState: ConnectionStateName;
  /** The edge URL of the attempt or session in this state; entering waiting_to_reconnect, of the next attempt. */
  readonly url: string;
} & StateChangeDetail;
/**
 * The backlog is delivered: every mailbox event up to `seq`, and the messages of each conversation the
 * hello listed or a replayed joined event named; live events and messages follow.
 */
export type Synced = Omit<SyncedFrame, "type">;
/** The mailbox cut the events the device lacked: reload what it shows through history; it continues from headSeq. */
export type Resync = Omit<ResyncFrame, "type">;

export type TokenRequest = { readonly reason: TokenReason };
/** Returns a token for the hello frame; called before every connection attempt. */
export type TokenProvider = (request: TokenRequest) => Promise<string>;

export type CellwireClientEvents = {
  state: StateChange;
  /**
   * Each mailbox event once, in mailbox order: the backlog after a resume, then live events. Kinds this SDK
   * does not know arrive as { kind: "unknown", unknownKind } (decision 0010): skip them.
   */
  event: ReceivedEvent;
  /**
   * Each message of a conversation once, per conversation in seq order (no order across conversations):
   * the backlog after the conversation's cursor on a resume, then live messages, the user's own included.
   */
  message: Message;
  /** The payload of each "joined" mailbox event, right after its "event": the user became a member. */
  joined: Joined;
  synced: Synced;
  resync: Resync;
  welcome: Welcome;
  error: CellwireClientError;
  /** Someone else, or this user on another device, is typing; emitted again on every refresh. */
  typing: TypingIndicator;
  /** A typing indicator lapsed without a refresh (or the client closed): stop showing it. */
  typingStopped: TypingStopped;
  /** A watched user went online or offline (also a change missed while the client was reconnecting). */
  presence: PresenceState;
  /** The payload of each "receipt" mailbox event, right after its "event": a member's positions moved. */
  receipt: Receipt;
};

/** A mailbox event as the client received it: its mailbox seq and the event, of a kind the SDK may not know. */
export type ReceivedEvent = Omit<EventFrame, "type">;
/** A member's read and delivered positions in a conversation (conversation seqs; 0 for none). */
export type Receipt = Omit<ReceiptEvent, "kind">;
/**
 * The user became a member of a conversation; its messages after `afterSeq` (the join point) follow as
 * "message" events, older ones are in history.
 */
export type Joined = Omit<JoinedEvent, "kind">;
/**
 * Where the device stands, for the app to store and pass back as resumeAfterSeq, resumeMailboxIncarnation
 * and resumeConversations when it starts again: the mailbox seq (undefined until known), the incarnation of
 * the mailbox it counts in (undefined until an edge names one), and the seq of the last message held in
 * each conversation, least recently updated first.
 */
export type Positions = {
  readonly mailboxSeq: number | undefined;
  readonly mailboxIncarnation: string | undefined;
  readonly conversations: Readonly<Record<string, number>>;
};
/** The user's positions after markRead. */
export type ReadPositions = { readonly conversationId: string; readonly readSeq: number; readonly deliveredSeq: number };

export type CellwireClientOptions = {
  /**
   * The edge's WebSocket URL, e.g. ws://127.0.0.1:8080/ws, or several edges' URLs (any edge serves any
   * user): the client starts with the first and moves to the next, round robin, when an edge fails it.
   */
  readonly url: string | readonly string[];
  readonly tokenProvider: TokenProvider;
  readonly deviceId?: string;
  /**
   * The last mailbox seq this device stored (0 asks for the whole mailbox); the first hello resumes after
   * it. Without it the first session starts live at the mailbox head. Later hellos resume from lastSeq.
   */
  readonly resumeAfterSeq?: number;
  /**
   * The mailbox incarnation this device stored with resumeAfterSeq (positions().mailboxIncarnation): the
   * edge answers a cursor of another mailbox (a restored database, another account) with `resync`
   * instead of resuming in it. Ignored without resumeAfterSeq. At most 64 of [A-Za-z0-9_-].
   */
  readonly resumeMailboxIncarnation?: string;
  /**
   * The conversation cursors this device stored (positions().conversations): conversation id → the seq of
   * the last message it holds, least recently updated first. A resuming hello lists the most recently
   * updated resumeConversationsMax (1000) of them, so each conversation's messages after its cursor
   * arrive before `synced`. Only a resuming hello lists them (see resumeAfterSeq); without resumeAfterSeq
   * they still drop the messages the device holds. At most 10000 entries.
   */
  readonly resumeConversations?: Readonly<Record<string, number>>;
  /** Defaults to globalThis.WebSocket; Node 20 has none, so pass the `ws` package's WebSocket there. */
  readonly WebSocket?: WebSocketConstructor;
  /** A request not settled within this time rejects with code "timeout" (default 10000). */
  readonly requestTimeoutMs?: number;
  /** Requests waiting for a reply, queued or in flight (default 1000); beyond it: "too_many_pending". */
  readonly pendingRequestsMax?: number;
  /** Retries of an idempotent request after retryable error replies (default 3). */
  readonly requestRetriesMax?: number;
  /** Delays between reconnect attempts. */
  readonly backoff?: Partial<BackoffOptions>;
  /** Delays between retries of a request after a retryable error reply. */
  readonly retryBackoff?: Partial<BackoffOptions>;
  /** One attempt, from asking for a token to welcome (default 10000). */
  readonly connectTimeoutMs?: number;
  /** A session that lasted this long resets the reconnect backoff when it ends (default 10000). */
  readonly stableConnectionMs?: number;
  /** Consecutive failed attempts before the client gives up and closes (default 100). */
  readonly reconnectAttemptsMax?: number;
  /** Ping every welcome.heartbeatIntervalMs while open, and drop a silent connection (default true). */
  readonly heartbeat?: boolean;
  /**
   * typing() calls for a conversation within this long of the last typing sent for it resolve without a
   * frame (default 2000; 0 sends every call). Above the edge's typing interval (1000 ms by default) and
   * below the indicator's life (5000 ms), so a typist calling typing() on every key stays shown and never
   * hits rate_limited.
   */
  readonly typingThrottleMs?: number;
  /**
   * When above 0 (1000 is a good value), messages of other users that arrive are reported with
   * `delivered` frames, one per conversation (its highest seq) at most every deliveredDelayMs, at most one
   * in flight per conversation. Default 0: off, since each report writes a receipt event to the
   * members' mailboxes, a cost the app should choose.
   */
  readonly deliveredDelayMs?: number;
  readonly random?: RandomSource;
  readonly clock?: Clock;
};

const defaults = {
  requestTimeoutMs: 10_000,
  pendingRequestsMax: 1000,
  requestRetriesMax: 3,
  connectTimeoutMs: 10_000,
  stableConnectionMs: 10_000,
  reconnectAttemptsMax: 100,
  typingThrottleMs: 2000,
  deliveredDelayMs: 0,
  retryBackoff: { initialDelayMs: 250, delayMsMax: 4000, multiplier: 2, jitterRatio: 0.5 },
} as const;

type Settings = {
  readonly urls: readonly string[];
  readonly deviceId: string | undefined;
  readonly resumeAfterSeq: number | undefined;
  readonly resumeMailboxIncarnation: string | undefined;
  readonly resumeConversations: Readonly<Record<string, number>>;
  readonly requestTimeoutMs: number;
  readonly pendingRequestsMax: number;
  readonly requestRetriesMax: number;
  readonly retryBackoff: BackoffOptions;
  readonly machine: ConnectionMachineOptions;
  readonly heartbeat: boolean;
  readonly typingThrottleMs: number;
  readonly deliveredDelayMs: number;
};

/** Conversations whose last typing time the client remembers for the throttle. */
const typingThrottledConversationsMax = 100;

type PendingRequest = {
  readonly kind: RequestKind;
  readonly body: RequestBody;
  /** The id of the current transmission; null while queued (not sent on the current session). */
  requestId: string | null;
  retriesUsed: number;
  /** clock.nowMs() past which the request has timed out: a retry due later is not worth waiting for. */
  readonly deadlineMs: number;
  cancelRetry: CancelTimer | null;
  /** A send held back because an earlier send to its conversation is not in flight (it waits for a retry). */
  heldForEarlierSend: boolean;
  cancelDeadline: CancelTimer;
  /** Receives a frame already checked with isReplyOf(kind). */
  readonly resolve: (frame: ServerFrame) => void;
  readonly reject: (error: CellwireClientError) => void;
};

type Deferred<T> = { readonly promise: Promise<T>; readonly resolve: (value: T) => void; readonly reject: (error: unknown) => void };

export class CellwireClient {
  private readonly settings: Settings;
  private readonly tokenProvider: TokenProvider;
  private readonly WebSocketClass: WebSocketConstructor;
  private readonly clock: Clock;
  private readonly random: RandomSource;
  private readonly listeners = new Listeners<CellwireClientEvents>();

  private machine: ConnectionState = initialConnectionState;
  private readonly machineInputs: ConnectionInput[] = [];
  private dispatching = false;
  private cancelMachineTimer: CancelTimer | null = null;

  private token: { readonly attemptId: number; readonly token: string } | null = null;
  private socket: { readonly attemptId: number; readonly socket: WebSocketLike } | null = null;
  private welcome: Welcome | null = null;
  private connecting: Deferred<Welcome> | null = null;
  private heartbeat: { cancel: CancelTimer; awaitingReply: boolean } | null = null;
  /** The timer of the current session's next token refresh (see scheduleTokenRefresh). */
  private cancelTokenRefresh: CancelTimer | null = null;
  private lastSeqValue: number | undefined = undefined;
  /** The mailbox lastSeq counts in (docs/decisions/0021): the stored one, then each synced's and resync's. */
  private mailboxIncarnationValue: string | undefined;
  /** Survives close() and connect(), as lastSeq does. */
  private readonly conversationPositions: ConversationPositions;
  /** The current session has received its `synced`. */
  private sessionSynced = false;
  /** One promise shared by every whenSynced() caller waiting for the next `synced`. */
  private syncing: Deferred<number> | null = null;

  /** Insertion order is call order: queued requests are transmitted in it after a welcome. */
  private readonly pending = new Set<PendingRequest>();
  private readonly inFlight = new Map<string, PendingRequest>();
  /**
   * The pending sends of each conversation, in call order: a send goes out only when every earlier one
   * is in flight, so retries keep the conversation's order (the edge names each send's predecessor, and
   * the cell stores a send only after it: docs/decisions/0020).
   */
  private readonly sendsByConversation = new Map<string, PendingRequest[]>();
  private requestCounter = 0;

  private readonly typingIndicators: TypingIndicators;
  /** Conversation → when typing() last sent a frame for it (clock.nowMs). */
  private readonly typingSentAtMs = new Map<string, number>();
  private readonly presenceWatch = new PresenceWatch();
  /** Grows with each watchPresence call, so the reply to an older one does not overwrite a newer set. */
  private presenceWatchGeneration = 0;
  private readonly deliveredReporter: DeliveredReporter;

  constructor(options: CellwireClientOptions) {
    this.settings = normaliseOptions(options);
    this.mailboxIncarnationValue = this.settings.resumeAfterSeq === undefined ? undefined : this.settings.resumeMailboxIncarnation;
    this.tokenProvider = options.tokenProvider;
    this.WebSocketClass = resolveWebSocketConstructor(options.WebSocket);
    this.clock = options.clock ?? systemClock;
    this.random = options.random ?? Math.random;
    this.conversationPositions = new ConversationPositions(this.settings.resumeConversations);
    this.typingIndicators = new TypingIndicators(
      this.clock,
      (indicator) => this.listeners.emit("typing", indicator),
      (stopped) => this.listeners.emit("typingStopped", stopped),
    );
    this.deliveredReporter = new DeliveredReporter(this.clock, this.settings.deliveredDelayMs, (conversationId, seq) =>
      this.reportDelivered(conversationId, seq),
    );
  }

  get state(): ConnectionStateName {
    return this.machine.name;
  }

  /** The edge URL of the current attempt or session; while waiting to reconnect, of the next attempt. */
  get url(): string {
    return this.urlAt(this.machine.urlIndex);
  }

  /** The last mailbox seq the device holds; undefined until a `synced` or an event makes it known. */
  get lastSeq(): number | undefined {
    return this.lastSeqValue;
  }

  /**
   * Where the device stands: lastSeq and the cursor of each conversation (a fresh object each call).
   * Store it and pass it back (resumeAfterSeq, resumeConversations) so a new run resumes without a gap.
   */
  positions(): Positions {
    return {
      mailboxSeq: this.lastSeqValue,
      mailboxIncarnation: this.mailboxIncarnationValue,
      conversations: this.conversationPositions.toRecord(),
    };
  }

  /** The number of requests waiting for a reply (queued, in flight or waiting to retry). */
  get pendingRequestCount(): number {
    return this.pending.size;
  }

  on<E extends keyof CellwireClientEvents>(event: E, listener: (payload: CellwireClientEvents[E]) => void): Unsubscribe {
    return this.listeners.on(event, listener);
  }

  /**
   * Starts connecting (and reconnecting) and resolves with the first welcome; rejects if the client
   * closes first (close(), a 4200-range close, or reconnectAttemptsMax failed attempts).
   */
  connect(): Promise<Welcome> {
    if (this.machine.name === "open" && this.welcome !== null) return Promise.resolve(this.welcome);
    this.connecting ??= deferred<Welcome>();
    const { promise } = this.connecting;
    this.dispatch({ type: "connect_requested" });
    return promise;
  }

  /**
   * Resolves with lastSeq once the current session has received its `synced`: at once when it already
   * has, otherwise at the next `synced`. Rejects with "closed" if the client closes first.
   */
  whenSynced(): Promise<number> {
    if (this.machine.name === "open" && this.sessionSynced && this.lastSeqValue !== undefined) return Promise.resolve(this.lastSeqValue);
    this.syncing ??= deferred<number>();
    return this.syncing.promise;
  }

  /** Closes the socket and rejects every pending request with code "closed"; connect() may be called again. */
  close(): void {
    this.dispatch({ type: "close_requested" });
  }

  async send(conversationId: string, body: string, options: { readonly clientMessageId?: string } = {}): Promise<Ack> {
    const clientMessageId = options.clientMessageId ?? createClientMessageId();
    const ack = await this.request<"send">({ type: "send", conversationId, clientMessageId, body });
    return { conversationId: ack.conversationId, messageId: ack.messageId, seq: ack.seq, sentAtMs: ack.sentAtMs, clientMessageId };
  }

  async openDirect(peerUserId: string): Promise<ConversationSummary> {
    return (await this.request<"openDirect">({ type: "openDirect", peerUserId })).conversation;
  }

  /**
   * Creates a group under a clientGroupId (a random one by default), which every retry and re-send of this
   * request carries: the edge derives the group's id from it, so a retry returns the same group. Pass one
   * to retry a createGroup across calls (after a restart) as with a send's clientMessageId.
   */
  async createGroup(
    title: string,
    memberUserIds: readonly string[],
    options: { readonly clientGroupId?: string } = {},
  ): Promise<ConversationSummary> {
    const clientGroupId = options.clientGroupId ?? createClientMessageId();
    return (await this.request<"createGroup">({ type: "createGroup", title, memberUserIds: [...memberUserIds], clientGroupId }))
      .conversation;
  }

  async addMembers(conversationId: string, userIds: readonly string[]): Promise<ConversationSummary> {
    return (await this.request<"addMembers">({ type: "addMembers", conversationId, userIds: [...userIds] })).conversation;
  }

  /** The newest `limit` messages before `beforeSeq` (all when absent), oldest first. */
  async history(conversationId: string, options: { readonly beforeSeq?: number; readonly limit?: number } = {}): Promise<HistoryPage> {
    const page = await this.request<"history">({
      type: "history",
      conversationId,
      ...(options.beforeSeq === undefined ? {} : { beforeSeq: options.beforeSeq }),
      ...(options.limit === undefined ? {} : { limit: options.limit }),
    });
    return { conversationId: page.conversationId, messages: page.messages, hasMore: page.hasMore };
  }

  /**
   * Tells the conversation's other members (and this user's other devices) that the user is typing; the
   * indicator lapses by itself at the receivers. Call it on every keystroke: calls within
   * typingThrottleMs of the last one sent for the conversation resolve without a frame. Rejects with
   * `closed` when not connected (an indicator is not worth queueing), `not_a_member` or `rate_limited`.
   */
  async typing(conversationId: string): Promise<void> {
    if (this.machine.name !== "open") {
      throw new CellwireClientError("closed", `cannot send typing while ${this.machine.name}: an indicator is not queued`, {
        retryable: true,
      });
    }
    const nowMs = this.clock.nowMs();
    const sentAtMs = this.typingSentAtMs.get(conversationId);
    if (sentAtMs !== undefined && nowMs - sentAtMs < this.settings.typingThrottleMs) return;
    this.rememberTypingSent(conversationId, nowMs);
    try {
      await this.request<"typing">({ type: "typing", conversationId });
    } catch (error) {
      // Not sent after all: the next call must not be swallowed by the throttle.
      if (this.typingSentAtMs.get(conversationId) === nowMs) this.typingSentAtMs.delete(conversationId);
      throw error;
    }
  }

  /**
   * Marks the conversation read up to its message `seq` (a conversation seq); resolves with the user's
   * positions after it. A lower seq than the stored one changes nothing. The user's other devices and
   * the other members receive a "receipt" event when the position moved. Rejects with `not_a_member`,
   * or `invalid_field` for a seq beyond the conversation's last.
   */
  async markRead(conversationId: string, seq: number): Promise<ReadPositions> {
    const ack = await this.request<"read">({ type: "read", conversationId, seq });
    this.deliveredReporter.positionReached(conversationId, ack.deliveredSeq);
    return { conversationId: ack.conversationId, readSeq: ack.readSeq, deliveredSeq: ack.deliveredSeq };
  }

  private async reportDelivered(conversationId: string, seq: number): Promise<void> {
    await this.request<"delivered">({ type: "delivered", conversationId, seq });
  }

  /**
   * Watches the presence of up to presenceWatchUsersMax (100) users, replacing the previous set (an
   * empty list stops watching); resolves with each user's current state, in the order given. Changes
   * then arrive as "presence" events. The set is watched again after every reconnect, and a change
   * missed meanwhile is emitted then.
   */
  async watchPresence(userIds: readonly string[]): Promise<PresenceState[]> {
    if (
      userIds.length > presenceWatchUsersMax ||
      new Set(userIds).size !== userIds.length ||
      !userIds.every((userId) => isUserId(userId))
    ) {
      throw new CellwireClientError("invalid_field", `watchPresence takes at most ${presenceWatchUsersMax} distinct user ids`, {
        retryable: false,
      });
    }
    this.presenceWatch.replace(userIds);
    this.presenceWatchGeneration += 1;
    const generation = this.presenceWatchGeneration;
    const snapshot = await this.request<"watchPresence">({ type: "watchPresence", userIds: [...userIds] });
    if (generation === this.presenceWatchGeneration) this.applyPresenceSnapshot(snapshot.users);
    return snapshot.users;
  }

  // -------------------------------------------------------------------------------------------------
  // Ephemeral state

  private rememberTypingSent(conversationId: string, nowMs: number): void {
    this.typingSentAtMs.delete(conversationId);
    this.typingSentAtMs.set(conversationId, nowMs);
    for (const [oldest, atMs] of this.typingSentAtMs) {
      if (this.typingSentAtMs.size <= typingThrottledConversationsMax && nowMs - atMs < this.settings.typingThrottleMs) break;
      this.typingSentAtMs.delete(oldest);
    }
  }

  private applyPresenceSnapshot(users: readonly PresenceState[]): void {
    for (const state of this.presenceWatch.snapshot(users)) this.listeners.emit("presence", state);
  }

  /** After a reconnect the new session watches nothing: watch the set again, unless a watchPresence is pending. */
  private rewatchPresence(): void {
    const userIds = this.presenceWatch.userIds;
    if (userIds.length === 0) return;
    for (const entry of this.pending) if (entry.kind === "watchPresence") return;
    const generation = this.presenceWatchGeneration;
    this.request<"watchPresence">({ type: "watchPresence", userIds: [...userIds] }).then(
      (snapshot) => {
        if (generation === this.presenceWatchGeneration) this.applyPresenceSnapshot(snapshot.users);
      },
      (error: unknown) => {
        if (error instanceof CellwireClientError && error.code === "closed") return;
        this.emitError(
          error instanceof CellwireClientError
            ? error
            : new CellwireClientError("internal", String(error), { retryable: true, cause: error }),
        );
      },
    );
  }

  // -------------------------------------------------------------------------------------------------
  // Requests

  private request<K extends RequestKind>(body: RequestBodyOf<K>): Promise<ReplyFrameOf<K>> {
    if (this.machine.name === "idle" || this.machine.name === "closed") {
      const why = this.machine.name === "idle" ? "call connect() first" : "the client is closed; call connect() to reconnect";
      return Promise.reject(new CellwireClientError("closed", `cannot send ${body.type}: ${why}`, { retryable: false }));
    }
    if (this.pending.size >= this.settings.pendingRequestsMax) {
      return Promise.reject(
        new CellwireClientError("too_many_pending", `${this.settings.pendingRequestsMax} requests are already waiting for replies`, {
          retryable: true,
        }),
      );
    }
    if (frameTooBig(body)) {
      // The edge would close the socket with 1009; after a reconnect the same frame would be sent again.
      return Promise.reject(
        new CellwireClientError("invalid_field", `the ${body.type} frame exceeds ${frameBytesMax} bytes`, { retryable: false }),
      );
    }
    return new Promise<ReplyFrameOf<K>>((resolve, reject) => {
      const entry: PendingRequest = {
        kind: body.type,
        body,
        requestId: null,
        retriesUsed: 0,
        deadlineMs: this.clock.nowMs() + this.settings.requestTimeoutMs,
        cancelRetry: null,
        heldForEarlierSend: false,
        cancelDeadline: () => {},
        resolve: (frame) => {
          this.forget(entry);
          resolve(frame as ReplyFrameOf<K>);
        },
        reject: (error) => {
          this.forget(entry);
          reject(error);
        },
      };
      entry.cancelDeadline = this.clock.setTimer(() => {
        const retryable = isIdempotent(entry.kind);
        entry.reject(
          new CellwireClientError("timeout", `no reply to ${entry.kind} within ${this.settings.requestTimeoutMs} ms`, { retryable }),
        );
      }, this.settings.requestTimeoutMs);
      this.pending.add(entry);
      const conversationId = sendConversationOf(entry);
      if (conversationId !== undefined) {
        const sends = this.sendsByConversation.get(conversationId);
        if (sends === undefined) this.sendsByConversation.set(conversationId, [entry]);
        else sends.push(entry);
      }
      if (this.machine.name === "open") this.transmit(entry);
    });
  }

  private forget(entry: PendingRequest): void {
    this.pending.delete(entry);
    entry.cancelDeadline();
    entry.cancelRetry?.();
    entry.cancelRetry = null;
    if (entry.requestId !== null) this.inFlight.delete(entry.requestId);
    entry.requestId = null;
    const conversationId = sendConversationOf(entry);
    if (conversationId === undefined) return;
    const sends = this.sendsByConversation.get(conversationId) ?? [];
    const index = sends.indexOf(entry);
    if (index >= 0) sends.splice(index, 1);
    if (sends.length === 0) this.sendsByConversation.delete(conversationId);
    else this.releaseHeldSends(sends);
  }

  /** Transmits, in call order, the held sends of a conversation that no earlier send holds back any more. */
  private releaseHeldSends(sends: readonly PendingRequest[]): void {
    for (const send of [...sends]) {
      if (send.requestId !== null) continue;
      if (!send.heldForEarlierSend) return;
      send.heldForEarlierSend = false;
      this.transmit(send);
      if (send.requestId === null) return;
    }
  }

  /** Sends the request on the open session with a fresh requestId; a queued request waits for the next welcome. */
  private transmit(entry: PendingRequest): void {
    if (this.machine.name !== "open" || !this.pending.has(entry)) return;
    const conversationId = sendConversationOf(entry);
    if (conversationId !== undefined) {
      const sends = this.sendsByConversation.get(conversationId) ?? [];
      // An earlier send of the conversation waiting for its retry (or held itself) goes first.
      for (const earlier of sends) {
        if (earlier === entry) break;
        if (earlier.requestId === null) {
          entry.heldForEarlierSend = true;
          return;
        }
      }
    }
    const requestId = this.nextRequestId();
    entry.requestId = requestId;
    this.inFlight.set(requestId, entry);
    this.sendText(JSON.stringify({ ...entry.body, requestId }));
  }

  private nextRequestId(): string {
    this.requestCounter += 1;
    return `r${this.requestCounter.toString(36)}`;
  }

  private settleReply(frame: Exclude<ServerFrame, MailboxFrame | { type: "welcome" | "error" | "typing" | "presence" | "message" }>): void {
    const entry = this.inFlight.get(frame.requestId);
    // Unknown ids are replies to an earlier transmission of a retried request, or heartbeat pongs.
    if (entry === undefined) return;
    if (isReplyOf(entry.kind, frame)) return entry.resolve(frame);
    entry.reject(new CellwireClientError("malformed_frame", `the edge answered ${entry.kind} with ${frame.type}`, { retryable: false }));
  }

  private settleErrorReply(entry: PendingRequest, frame: ErrorFrame): void {
    if (entry.requestId !== null) this.inFlight.delete(entry.requestId);
    entry.requestId = null;
    const error = new CellwireClientError(frame.code, frame.message, { retryable: frame.retryable, retryAfterMs: frame.retryAfterMs });
    if (frame.retryable && isIdempotent(entry.kind) && entry.retriesUsed < this.settings.requestRetriesMax) {
      const delayMs = retryDelayMs(entry.retriesUsed, this.settings.retryBackoff, this.random, frame.retryAfterMs);
      // A retry due after the request's deadline would never go out: the caller hears the edge's reason
      // now rather than a timeout later.
      if (this.clock.nowMs() + delayMs >= entry.deadlineMs) return entry.reject(error);
      entry.retriesUsed += 1;
      entry.cancelRetry = this.clock.setTimer(() => {
        entry.cancelRetry = null;
        // Not open now: the request stays queued and goes out after the next welcome.
        this.transmit(entry);
        // The later sends to its conversation that waited for this retry follow it, in call order.
        const conversationId = sendConversationOf(entry);
        const sends = conversationId === undefined ? undefined : this.sendsByConversation.get(conversationId);
        if (sends !== undefined && entry.requestId !== null) this.releaseHeldSends(sends);
      }, delayMs);
      return;
    }
    entry.reject(error);
  }

  // -------------------------------------------------------------------------------------------------
  // Incoming frames

  private receive(data: unknown, attemptId: number): void {
    if (typeof data !== "string") {
      this.emitError(
        new CellwireClientError("malformed_frame", "the edge sent a binary frame; frames are JSON text", { retryable: false }),
      );
      return;
    }
    const decoded = decodeServerFrame(data);
    if (!decoded.ok) {
      const { path, reason } = decoded.failure;
      this.emitError(
        new CellwireClientError("malformed_frame", `ignored an undecodable frame from the edge: ${path} ${reason}`, { retryable: false }),
      );
      return;
    }
    // Any frame, one of a type this SDK does not know included, shows the connection is alive.
    if (this.heartbeat !== null) this.heartbeat.awaitingReply = false;
    const frame = decoded.value;
    // A frame type a newer edge added (decision 0010): ignored, never an error.
    if (frame === null) return;
    switch (frame.type) {
      case "welcome": {
        if (this.machine.name !== "authenticating") return;
        const { type: _type, ...welcome } = frame;
        this.welcome = welcome;
        this.dispatch({ type: "welcome_received", attemptId });
        return;
      }
      case "event":
      case "synced":
      case "resync":
        return this.receiveMailboxFrame(frame, attemptId);
      case "message":
        return this.receiveMessageFrame(frame, attemptId);
      case "error": {
        const entry = frame.requestId === undefined ? undefined : this.inFlight.get(frame.requestId);
        if (entry !== undefined) return this.settleErrorReply(entry, frame);
        // An error about no request of ours (a bad frame, or a stale request id) is only reported.
        if (frame.requestId === undefined) {
          this.emitError(
            new CellwireClientError(frame.code, frame.message, { retryable: frame.retryable, retryAfterMs: frame.retryAfterMs }),
          );
        }
        return;
      }
      case "typing":
        if (this.machine.name === "open") this.typingIndicators.received(frame);
        return;
      case "presence": {
        if (this.machine.name !== "open") return;
        const news = this.presenceWatch.changed({ userId: frame.userId, status: frame.status, changedAtMs: frame.changedAtMs });
        if (news !== undefined) this.listeners.emit("presence", news);
        return;
      }
      default:
        this.settleReply(frame);
    }
  }

  private receiveMailboxFrame(frame: MailboxFrame, attemptId: number): void {
    // The edge sends mailbox frames after the welcome; the position only moves within a session.
    if (this.machine.name !== "open") return;
    const outcome = applyMailboxFrame(this.lastSeqValue, frame);
    if (outcome.kind === "gap") {
      const { receivedSeq, expectedSeq, lastSeq } = outcome;
      const text = `the edge sent mailbox seq ${receivedSeq} when ${expectedSeq} was due; reconnecting to resume after ${lastSeq}`;
      this.emitError(new CellwireClientError("mailbox_gap", text, { retryable: true }));
      this.dispatch({ type: "sequence_gap", attemptId });
      return;
    }
    this.lastSeqValue = outcome.lastSeq;
    if (outcome.kind === "synced" || outcome.kind === "resync") this.mailboxIncarnationValue = outcome.mailboxIncarnation;
    switch (frame.type) {
      case "event": {
        if (outcome.kind !== "emit") return;
        const event = frame.event;
        // The cursor starts before the listeners run, so one that calls positions() sees it.
        if (event.kind === "joined") this.conversationPositions.joined(event.conversationId, event.afterSeq);
        this.listeners.emit("event", { seq: frame.seq, event });
        if (event.kind === "joined") {
          const { kind: _kind, ...joined } = event;
          this.listeners.emit("joined", joined);
        } else if (event.kind === "receipt") {
          const { kind: _kind, ...receipt } = event;
          this.listeners.emit("receipt", receipt);
        }
        // An unknown kind only moved lastSeq: a newer edge's events do not stop this client.
        return;
      }
      case "synced": {
        this.sessionSynced = true;
        const { type: _type, ...synced } = frame;
        this.listeners.emit("synced", synced);
        const syncing = this.syncing;
        this.syncing = null;
        syncing?.resolve(outcome.lastSeq);
        return;
      }
      case "resync": {
        const { type: _type, ...resync } = frame;
        this.listeners.emit("resync", resync);
        return;
      }
    }
  }

  private receiveMessageFrame(frame: MessageFrame, attemptId: number): void {
    // As mailbox frames: a message counts only on an open session, whose edge keeps it gapless.
    if (this.machine.name !== "open") return;
    const { message } = frame;
    const outcome = this.conversationPositions.receive(message.conversationId, message.seq);
    if (outcome.kind === "duplicate") return;
    if (outcome.kind === "gap") {
      const { receivedSeq, expectedSeq, cursor } = outcome;
      const text = `the edge sent seq ${receivedSeq} of conversation ${message.conversationId} when ${expectedSeq} was due; reconnecting to resume it after ${cursor}`;
      this.emitError(new CellwireClientError("conversation_gap", text, { retryable: true }));
      this.dispatch({ type: "sequence_gap", attemptId });
      return;
    }
    this.listeners.emit("message", message);
    if (this.settings.deliveredDelayMs > 0 && message.senderUserId !== this.welcome?.userId) {
      this.deliveredReporter.messageReceived(message.conversationId, message.seq);
    }
  }

  // -------------------------------------------------------------------------------------------------
  // The machine and its effects

  /** Inputs raised while effects run (a listener calling close(), say) are queued, so transitions never nest. */
  private dispatch(input: ConnectionInput): void {
    this.machineInputs.push(input);
    if (this.dispatching) return;
    this.dispatching = true;
    try {
      for (let next = this.machineInputs.shift(); next !== undefined; next = this.machineInputs.shift()) {
        const result = transition(this.machine, next, this.settings.machine, { nowMs: this.clock.nowMs(), random: this.random });
        this.machine = result.state;
        for (const effect of result.effects) this.perform(effect);
      }
    } finally {
      this.dispatching = false;
    }
  }

  private perform(effect: ConnectionEffect): void {
    switch (effect.type) {
      case "emit_state":
        this.listeners.emit("state", {
          state: effect.state,
          previousState: effect.previousState,
          url: this.urlAt(effect.urlIndex),
          ...effect.detail,
        });
        return;
      case "fetch_token":
        return this.fetchToken(effect.attemptId, effect.reason);
      case "open_socket":
        return this.openSocket(effect.attemptId, this.urlAt(effect.urlIndex));
      case "send_hello":
        return this.sendHello(effect.attemptId);
      case "close_socket":
        return this.closeSocket(effect.code);
      case "set_timer":
        this.cancelMachineTimer?.();
        this.cancelMachineTimer = this.clock.setTimer(() => {
          this.cancelMachineTimer = null;
          this.dispatch({ type: "timer_fired" });
        }, effect.delayMs);
        return;
      case "clear_timer":
        this.cancelMachineTimer?.();
        this.cancelMachineTimer = null;
        return;
      case "start_session":
        return this.startSession(effect.attemptId);
      case "end_session":
        return this.endSession(effect.closeCode);
      case "fail_requests":
        return this.failRequests(effect.reason, effect.closeCode);
    }
  }

  private fetchToken(attemptId: number, reason: TokenReason): void {
    this.token = null;
    const isCurrent = (): boolean => this.machine.name === "connecting" && this.machine.attemptId === attemptId;
    const fetched = (async () => this.tokenProvider({ reason }))();
    fetched.then(
      (token: unknown) => {
        if (!isCurrent()) return;
        if (typeof token !== "string" || token.length === 0 || token.length > tokenLengthMax) {
          this.emitError(
            new CellwireClientError(
              "token_unavailable",
              `the token provider returned no usable token (a string of 1 to ${tokenLengthMax} characters)`,
              { retryable: true },
            ),
          );
          this.dispatch({ type: "token_failed", attemptId });
          return;
        }
        this.token = { attemptId, token };
        this.dispatch({ type: "token_received", attemptId });
      },
      (error: unknown) => {
        if (!isCurrent()) return;
        const detail = error instanceof Error ? error.message : String(error);
        this.emitError(
          new CellwireClientError("token_unavailable", `the token provider failed: ${detail}`, { retryable: true, cause: error }),
        );
        this.dispatch({ type: "token_failed", attemptId });
      },
    );
  }

  private urlAt(urlIndex: number): string {
    const url = this.settings.urls[urlIndex];
    if (url === undefined) throw new Error(`CellwireClient bug: no edge URL at index ${urlIndex}`);
    return url;
  }

  private openSocket(attemptId: number, url: string): void {
    if (this.socket !== null) this.closeSocket(standardCloseCodes.normal);
    let socket: WebSocketLike;
    try {
      socket = new this.WebSocketClass(url);
    } catch (error) {
      const detail = error instanceof Error ? error.message : String(error);
      this.emitError(
        new CellwireClientError("closed", `could not open a WebSocket to ${url}: ${detail}`, { retryable: true, cause: error }),
      );
      this.dispatch({ type: "socket_closed", attemptId, code: standardCloseCodes.abnormal });
      return;
    }
    this.socket = { attemptId, socket };
    // Events of a socket the client has let go of (closed, or replaced) are ignored.
    const isCurrent = (): boolean => this.socket?.socket === socket;
    socket.addEventListener("open", () => {
      if (isCurrent()) this.dispatch({ type: "socket_opened", attemptId });
    });
    socket.addEventListener("message", (event) => {
      if (isCurrent()) this.receive(event.data, attemptId);
    });
    // `ws` throws an unhandled "error" without a listener; the close event that follows is what counts.
    socket.addEventListener("error", () => {});
    socket.addEventListener("close", (event) => {
      if (!isCurrent()) return;
      this.socket = null;
      this.dispatch({ type: "socket_closed", attemptId, code: event.code });
    });
  }

  private sendHello(attemptId: number): void {
    const token = this.token;
    this.token = null;
    if (token === null || token.attemptId !== attemptId) throw new Error(`CellwireClient bug: no token for attempt ${attemptId}`);
    const mailboxCursor = helloMailboxCursor(this.lastSeqValue, this.settings.resumeAfterSeq, this.mailboxIncarnationValue);
    const { resumeAfterSeq } = mailboxCursor;
    // Cursors only go with a resume: a session without resumeAfterSeq starts live, backlog-free.
    const conversations = resumeAfterSeq === undefined ? [] : this.conversationPositions.resumeCursors(resumeConversationsMax);
    const hello: HelloFrame = {
      type: "hello",
      protocolVersion,
      token: token.token,
      ...(this.settings.deviceId === undefined ? {} : { deviceId: this.settings.deviceId }),
      ...mailboxCursor,
      ...(conversations.length === 0 ? {} : { conversations }),
    };
    this.sendText(JSON.stringify(hello));
  }

  private closeSocket(code: number): void {
    const current = this.socket;
    this.socket = null;
    if (current === null) return;
    try {
      current.socket.close(code);
    } catch {
      // Closing a socket that is already closing can throw in some runtimes; it is gone either way.
    }
  }

  private sendText(text: string): void {
    const current = this.socket;
    if (current === null) return;
    try {
      current.socket.send(text);
    } catch (error) {
      // The socket is going away; its close event follows and queued requests are sent again after it.
      const detail = error instanceof Error ? error.message : String(error);
      this.emitError(new CellwireClientError("closed", `could not write to the socket: ${detail}`, { retryable: true, cause: error }));
    }
  }

  private startSession(attemptId: number): void {
    const welcome = this.welcome;
    if (welcome === null) throw new Error("CellwireClient bug: session started without a welcome");
    this.listeners.emit("welcome", welcome);
    const connecting = this.connecting;
    this.connecting = null;
    connecting?.resolve(welcome);
    for (const entry of [...this.pending]) {
      if (entry.requestId === null && entry.cancelRetry === null) this.transmit(entry);
    }
    this.rewatchPresence();
    if (this.settings.heartbeat) this.startHeartbeat(attemptId, welcome.heartbeatIntervalMs);
    this.scheduleTokenRefresh(attemptId, welcome.tokenExpiresAtMs);
  }

  /**
   * Before the edge's deadline for the session's token (welcome.tokenExpiresAtMs, then each refreshed
   * frame's), asks the token provider for a fresh token (reason "refresh") and sends it on the open socket.
   * Only an edge whose welcome names the deadline takes `refresh` (docs/decisions/0010); against an older
   * one nothing is scheduled. A refresh that fails is reported as an error and not retried here: the edge
   * then closes with 4101 at the deadline, and the client reconnects with a fresh token as for any
   * 4100-range close.
   */
  private scheduleTokenRefresh(attemptId: number, tokenExpiresAtMs: number | undefined): void {
    this.cancelTokenRefresh?.();
    this.cancelTokenRefresh = null;
    const delayMs = tokenRefreshDelayMs(this.clock.nowMs(), tokenExpiresAtMs, this.random());
    if (delayMs === undefined) return;
    this.cancelTokenRefresh = this.clock.setTimer(() => {
      this.cancelTokenRefresh = null;
      void this.refreshToken(attemptId);
    }, delayMs);
  }

  private async refreshToken(attemptId: number): Promise<void> {
    const isCurrent = (): boolean => this.machine.name === "open" && this.machine.attemptId === attemptId;
    if (!isCurrent()) return;
    try {
      const token: unknown = await this.tokenProvider({ reason: "refresh" });
      if (!isCurrent()) return;
      if (typeof token !== "string" || token.length === 0 || token.length > tokenLengthMax) {
        throw new CellwireClientError(
          "token_unavailable",
          `the token provider returned no usable token (a string of 1 to ${tokenLengthMax} characters)`,
          { retryable: true },
        );
      }
      const refreshed = await this.request<"refresh">({ type: "refresh", token });
      if (isCurrent()) this.scheduleTokenRefresh(attemptId, refreshed.tokenExpiresAtMs);
    } catch (error) {
      if (!isCurrent()) return;
      if (error instanceof CellwireClientError) return this.emitError(error);
      const detail = error instanceof Error ? error.message : String(error);
      this.emitError(
        new CellwireClientError("token_unavailable", `the token provider failed: ${detail}`, { retryable: true, cause: error }),
      );
    }
  }

  private startHeartbeat(attemptId: number, intervalMs: number): void {
    const heartbeat = { cancel: (() => {}) as CancelTimer, awaitingReply: false };
    const tick = (): void => {
      if (this.heartbeat !== heartbeat) return;
      // Nothing at all arrived during a whole interval, not even the last pong: the connection is dead.
      if (heartbeat.awaitingReply) return this.dispatch({ type: "heartbeat_missed", attemptId });
      heartbeat.awaitingReply = true;
      this.sendText(JSON.stringify({ type: "ping", requestId: this.nextRequestId() }));
      heartbeat.cancel = this.clock.setTimer(tick, intervalMs);
    };
    heartbeat.cancel = this.clock.setTimer(tick, intervalMs);
    this.heartbeat = heartbeat;
  }

  private endSession(closeCode: number | null): void {
    this.heartbeat?.cancel();
    this.heartbeat = null;
    this.cancelTokenRefresh?.();
    this.cancelTokenRefresh = null;
    this.welcome = null;
    this.sessionSynced = false;
    for (const [requestId, entry] of [...this.inFlight]) {
      this.inFlight.delete(requestId);
      entry.requestId = null;
      if (closeCode === standardCloseCodes.messageTooBig) {
        // One of these frames was too big for the edge; we cannot tell which, and resending it would loop.
        entry.reject(
          new CellwireClientError(
            "invalid_field",
            `the edge closed the connection (1009, frame too big) while ${entry.kind} was in flight`,
            { retryable: false },
          ),
        );
      } else if (!isIdempotent(entry.kind)) {
        entry.reject(
          new CellwireClientError("closed", `the connection dropped before the reply to ${entry.kind}; its outcome is unknown`, {
            retryable: false,
          }),
        );
      }
      // Idempotent requests stay pending and are transmitted again after the next welcome.
    }
  }

  private failRequests(reason: ClosedReason, closeCode: number | null): void {
    this.cancelTokenRefresh?.();
    this.cancelTokenRefresh = null;
    this.token = null;
    this.welcome = null;
    const error = new CellwireClientError("closed", closedMessage(reason, closeCode), { retryable: false });
    for (const entry of [...this.pending]) entry.reject(error);
    const connecting = this.connecting;
    this.connecting = null;
    connecting?.reject(error);
    const syncing = this.syncing;
    this.syncing = null;
    syncing?.reject(error);
    this.typingIndicators.stopAll();
    this.deliveredReporter.stop();
  }

  private emitError(error: CellwireClientError): void {
    this.listeners.emit("error", error);
  }
}

function closedMessage(reason: ClosedReason, closeCode: number | null): string {
  const code = closeCode === null ? "" : ` (close code ${closeCode})`;
  switch (reason) {
    case "close_requested":
      return "the client was closed";
    case "stopped_by_server":
      return `the edge closed the connection and asked the client not to reconnect${code}`;
    case "reconnect_limit":
      return `the client gave up reconnecting after too many failed attempts${code}`;
  }
}

// A frame whose UTF-8 size cannot exceed the limit (3 bytes per UTF-16 unit at most) skips the encoding.
const utf8 = new TextEncoder();
function frameTooBig(body: RequestBody): boolean {
  // frameBytesMax is sized so that a send whose body is within its limit always fits (protocol/limits.ts):
  // the hot path skips encoding the frame twice.
  if (body.type === "send" && body.body.length <= messageBodyLengthMax) return false;
  const text = JSON.stringify({ ...body, requestId: "r".repeat(requestIdLengthMax) });
  return text.length * 3 > frameBytesMax && utf8.encode(text).length > frameBytesMax;
}

function deferred<T>(): Deferred<T> {
  let resolve: (value: T) => void = () => {};
  let reject: (error: unknown) => void = () => {};
  const promise = new Promise<T>((resolvePromise, rejectPromise) => {
    resolve = resolvePromise;
    reject = rejectPromise;
  });
  return { promise, resolve, reject };
}

function normaliseOptions(options: CellwireClientOptions): Settings {
  const urls = normaliseEdgeUrls(options.url);
  if (typeof options.tokenProvider !== "function") throw new TypeError("CellwireClient: tokenProvider must be a function");
  if (options.deviceId !== undefined && !isDeviceId(options.deviceId)) {
    throw new TypeError(`CellwireClient: deviceId must match [A-Za-z0-9_-]{1,64}, got ${JSON.stringify(options.deviceId)}`);
  }
  return {
    urls,
    deviceId: options.deviceId,
    resumeAfterSeq: options.resumeAfterSeq === undefined ? undefined : nonNegativeInteger("resumeAfterSeq", options.resumeAfterSeq, 0),
    resumeMailboxIncarnation: normaliseMailboxIncarnation(options.resumeMailboxIncarnation),
    resumeConversations: normaliseResumeConversations(options.resumeConversations),
    requestTimeoutMs: positiveInteger("requestTimeoutMs", options.requestTimeoutMs, defaults.requestTimeoutMs),
    pendingRequestsMax: positiveInteger("pendingRequestsMax", options.pendingRequestsMax, defaults.pendingRequestsMax),
    requestRetriesMax: nonNegativeInteger("requestRetriesMax", options.requestRetriesMax, defaults.requestRetriesMax),
    retryBackoff: normaliseBackoffOptions(options.retryBackoff, defaults.retryBackoff),
    heartbeat: options.heartbeat ?? true,
    typingThrottleMs: nonNegativeInteger("typingThrottleMs", options.typingThrottleMs, defaults.typingThrottleMs),
    deliveredDelayMs: nonNegativeInteger("deliveredDelayMs", options.deliveredDelayMs, defaults.deliveredDelayMs),
    machine: {
      backoff: normaliseBackoffOptions(options.backoff),
      connectTimeoutMs: positiveInteger("connectTimeoutMs", options.connectTimeoutMs, defaults.connectTimeoutMs),
      stableConnectionMs: nonNegativeInteger("stableConnectionMs", options.stableConnectionMs, defaults.stableConnectionMs),
      reconnectAttemptsMax: nonNegativeInteger("reconnectAttemptsMax", options.reconnectAttemptsMax, defaults.reconnectAttemptsMax),
      urlCount: urls.length,
    },
  };
}

/** Checked here: the edge closes a session whose hello is invalid with 4200, which stops the client for good. */
function normaliseMailboxIncarnation(stored: string | undefined): string | undefined {
  if (stored === undefined) return undefined;
  if (typeof stored !== "string" || !mailboxIncarnationPattern.test(stored)) {
    throw new TypeError(`CellwireClient: resumeMailboxIncarnation must match [A-Za-z0-9_-]{1,64}, got ${JSON.stringify(stored)}`);
  }
  return stored;
}

/**
 * A copy of the stored cursors, checked here: they go into the hello, and the edge closes a session whose
 * hello is invalid with 4200 (protocol_violation), which stops the client for good.
 */
function normaliseResumeConversations(stored: Readonly<Record<string, number>> | undefined): Readonly<Record<string, number>> {
  if (stored === undefined) return {};
  if (typeof stored !== "object" || stored === null || Array.isArray(stored)) {
    throw new TypeError("CellwireClient: resumeConversations must be an object of conversation id → seq");
  }
  const entries = Object.entries(stored);
  if (entries.length > conversationCursorsMax) {
    throw new RangeError(`CellwireClient: resumeConversations holds at most ${conversationCursorsMax} cursors, got ${entries.length}`);
  }
  for (const [conversationId, seq] of entries) {
    if (!isConversationId(conversationId))
      throw new TypeError(`CellwireClient: resumeConversations names an invalid conversation id ${JSON.stringify(conversationId)}`);
    if (!Number.isSafeInteger(seq) || seq < 0)
      throw new RangeError(`CellwireClient: resumeConversations[${conversationId}] must be an integer >= 0, got ${seq}`);
  }
  return Object.fromEntries(entries);
}

function positiveInteger(name: string, value: number | undefined, fallback: number): number {
  const chosen = value ?? fallback;
  if (!Number.isSafeInteger(chosen) || chosen < 1)
    throw new RangeError(`CellwireClient: ${name} must be a positive integer, got ${chosen}`);
  return chosen;
}

function nonNegativeInteger(name: string, value: number | undefined, fallback: number): number {
  const chosen = value ?? fallback;
  if (!Number.isSafeInteger(chosen) || chosen < 0) throw new RangeError(`CellwireClient: ${name} must be an integer >= 0, got ${chosen}`);
  return chosen;
}

/** The conversation of a send (whose order the client keeps); undefined for any other request. */
function sendConversationOf(entry: PendingRequest): string | undefined {
  return entry.body.type === "send" ? entry.body.conversationId : undefined;
}
