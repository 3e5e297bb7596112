// One client connection on an edge: its authentication, its place in the user's mailbox and in each
// conversation it follows (the cursors), the backlog it reads on welcome and after a gap, the requests it
// serves through the core, and its writes to the socket. The core (edge-core.ts) owns the sessions.
import { randomUUID } from "node:crypto";
import {
  closeCodes,
  conversationPageLimitMax,
  decodeClientFrame,
  protocolVersion,
  protocolVersionsSupported,
  mailboxPageLimitMax,
  type ClientRequestFrame,
  type CloseReason,
  type HelloFrame,
  type Message,
  type RefreshFrame,
  type SendFrame,
  type SequencedEvent,
  type ServerFrame,
} from "@cellwire/protocol";
import {
  activeTraceId,
  activeTracing,
  CellwireError,
  RemoteError,
  sendTraceId,
  sleep,
  traceIdOf,
  type HomeLocation,
  type SendIdentity,
} from "@cellwire/cluster";
import type { CatchUpScope, CatchUpTarget } from "./catch-up-pacer.ts";
import { ConversationCursor, type ConversationPage } from "./conversation-cursor.ts";
import type { DeliveryTarget } from "./delivery-hub.ts";
import type { SendOutcome, SessionHost, SessionTransport } from "./session-host.ts";
import { errorFrame, errorFrameFor } from "./error-mapping.ts";
import type { RequestContext } from "./request-handler.ts";
import type { DrainTarget } from "./edge-drain.ts";
import type { SendAnswer, SentFrameType } from "./edge-metrics.ts";
import { HeldBytesBudget } from "./held-bytes.ts";
import { MailboxCursor } from "./mailbox-cursor.ts";
import { SendOrder } from "./send-order.ts";
import { rateLimitedKindOf, SessionRateLimits, type UserRateLimits } from "./rate-limit/request-rate-limits.ts";
import { TypingRateLimiter } from "./typing/typing-rate-limiter.ts";
import type { TypingIndicator } from "./typing/typing-relay.ts";

type SessionState =
  | { readonly kind: "awaiting_hello" }
  | {
      readonly kind: "authenticating";
      /**
       * A mailbox event reached the session after it registered for its user's deliveries and before it
       * opened: its mailbox is not known empty, so it is read even for a user placed by this hello (0043).
       */
      mailboxEventArrived: boolean;
    }
  | {
      readonly kind: "open";
      readonly userId: string;
      readonly deviceId: string;
      /** Follows the user's mailbox when it moves to another cell (a page answered there, directory.changed). */
      readonly homeCellId: string;
      readonly homeEpoch: number;
      readonly cursor: MailboxCursor;
      /** The bytes of live items held by the cursors while they read (heldBytesPerSessionMax). */
      readonly heldBytes: HeldBytesBudget;
      /**
       * A cursor per conversation the session follows, least recently used first (docs/decisions/0009).
       * Bounded by conversationsPerSessionMax. Made when the first is followed: an empty Map costs an idle
       * session ~270 bytes (issue 9's 2 KiB per idle socket); read through followedConversations().
       */
      conversations: Map<string, ConversationCursor> | undefined;
      /** The hello resumed (resumeAfterSeq): a conversation first seen live is read from the join point. */
      readonly resumed: boolean;
      /** Made at the session's first typing frame: most sessions never send one. */
      typingLimiter: TypingRateLimiter | undefined;
    }
  | { readonly kind: "closed" };

/** Reads of one conversation's log in one go, held messages included, before it is taken as broken. */
const conversationReadRoundsMax = 100;
/** Attempts of one page of a log that a cell answers `overloaded`, each after the retry-after it asked for. */
const overloadedReadAttemptsMax = 5;
/**
 * A hello asks the directory for its user's home again when the directory did not answer, after a
 * doubling, jittered delay from this one, for at most half the hello's deadline (authTimeoutMs).
 */
const homeRetryDelayMsFirst = 250;
/** What a cell that does not answer (or sheds load) says: its conversations are read again later. */
const cellOutageCodes = new Set<string>(["cell_unavailable", "directory_unavailable", "overloaded", "moving"]);
/** The delays between reads of a conversation whose cell did not answer: doubling, jittered, bounded. */
const conversationRetryDelayMsFirst = 500;
const conversationRetryDelayMsMax = 30_000;

/**
 * The session's waits before asking a cell or the directory again: doubling from `firstMs` (attempt 0),
 * bounded by `maxMs`, then jittered down by up to half so sessions that failed together spread out.
 */
function retryDelayMs(firstMs: number, attempt: number, maxMs: number): number {
  return Math.min(maxMs, firstMs * 2 ** attempt) * (0.5 + Math.random() / 2);
}

/** What a session that follows no conversation iterates: never written (follow() makes the session's own). */
const noConversations: ReadonlyMap<string, ConversationCursor> = new Map();

/** A conversation read by a session: whether a read runs now, the reads that failed so far, the next one's timer. */
type ConversationRead = { reading: boolean; failedReads: number; retryTimer: ReturnType<typeof setTimeout> | undefined };

/**
 * A monotonic time as whole ms: V8 keeps a small integer in the object's field itself, where a fraction
 * (performance.now()'s) costs every session a 16-byte box. Silence is judged in seconds.
 */
function wholeMs(monotonicMs: number): number {
  return Math.floor(monotonicMs);
}

export class Session implements DeliveryTarget, DrainTarget, CatchUpTarget {
  private state: SessionState = { kind: "awaiting_hello" };
  private requestsInFlight = 0;
  /** The order of this session's sends per conversation; made at its first send. */
  private sendOrder: SendOrder | undefined;
  /**
   * This session's sends not yet answered, by conversation and clientMessageId, settled when they resolve:
   * a send overtaking its predecessor waits for it (serveSend). At most requestsInFlightPerSessionMax.
   * Made at the first send, like sendOrder: a session that never sends pays no Map.
   */
  private sendsInFlight: Map<string, Promise<ServerFrame>> | undefined;
  /** The edge is draining and this session's moment came: it closes once its last request is answered. */
  private closeWhenIdleRequested = false;
  private syncRunning = false;
  /**
   * Conversations whose log this session is reading now or will read again (their cell did not answer).
   * Made on the first read: most idle sessions never need it, and an empty Map costs ~250 bytes each.
   */
  private conversationReads: Map<string, ConversationRead> | undefined;
  /** The initial sync (mailbox, then every listed and joined conversation) is still running: no `synced` yet. */
  private initialSyncRunning = true;
  /**
   * This session's request buckets, and its user's on this edge (shared with the user's other sessions
   * here). Made on the first request that draws on them, or the first fan-out charged: an idle session
   * pays one empty field, not ~200 bytes of buckets.
   */
  private rateLimits: SessionRateLimits | undefined;
  /** Dropped once the hello is answered: a cleared Timeout would otherwise stay referenced for the session's life. */
  private authTimer: ReturnType<typeof setTimeout> | undefined;
  /**
   * When the session's token stops being accepted (ms since the epoch, wall clock): the edge's sweep
   * closes the session with 4101 then (EdgeCore.closeExpiredSessions). Infinite until welcome: the
   * authentication deadline bounds a session before it.
   */
  private expiresAtMs = Number.POSITIVE_INFINITY;
  /** Monotonic ms of the last refresh accepted for verification; -Infinity before the first. */
  /**
   * Monotonic ms of the last frame received (of the socket's opening before one): a client pings every
   * heartbeatIntervalMs, so a session silent much longer is taken for gone when its user needs the room
   * (EdgeCore.closeSilentSessionOf). One number stored per frame, no allocation.
   */
  private lastHeardAtMsValue: number;

  constructor(
    private readonly core: SessionHost<Session>,
    private readonly transport: SessionTransport,
  ) {
    this.lastHeardAtMsValue = wholeMs(core.ephemeral.monotonicNowMs());
    this.authTimer = setTimeout(() => this.close("authentication_timeout", "no hello within the deadline"), core.limits.authTimeoutMs);
  }

  get tokenExpiresAtMs(): number {
    return this.expiresAtMs;
  }

  get lastHeardAtMs(): number {
    return this.lastHeardAtMsValue;
  }

  get isOpen(): boolean {
    return this.state.kind === "open";
  }

  get userId(): string | undefined {
    return this.state.kind === "open" ? this.state.userId : undefined;
  }

  /** The user's rate limits on this edge, which the user's other sessions share; undefined until first used. */
  get userRateLimits(): UserRateLimits | undefined {
    return this.state.kind === "open" ? this.rateLimits?.user : undefined;
  }

  private rateLimitsOf(userId: string): SessionRateLimits {
    return (this.rateLimits ??= new SessionRateLimits(this.core.userRateLimits(userId)));
  }

  /** A text (or binary) frame from the client. Never throws. */
  receive(text: string, isBinary: boolean): void {
    if (this.state.kind === "closed") return;
    this.lastHeardAtMsValue = wholeMs(this.core.ephemeral.monotonicNowMs());
    if (isBinary) {
      this.core.metrics.frameReceived("unknown");
      if (this.state.kind !== "open") return this.close("protocol_violation", "binary frame before authentication");
      return this.reply(errorFrame("malformed_frame", "frames are JSON text, not binary", undefined));
    }
    const decoded = decodeClientFrame(text);
    this.core.metrics.frameReceived(decoded.ok ? decoded.frame.type : "unknown");
    if (this.state.kind === "awaiting_hello") {
      if (!decoded.ok || decoded.frame.type !== "hello") return this.close("protocol_violation", "the first frame must be a valid hello");
      void this.authenticate(decoded.frame);
      return;
    }
    if (this.state.kind === "authenticating") return this.close("protocol_violation", "wait for welcome before sending requests");
    const { userId, deviceId, homeCellId } = this.state;
    if (!decoded.ok) return this.reply(errorFrame(decoded.failure.code, decoded.failure.message, decoded.failure.requestId));
    const frame = decoded.frame;
    if (frame.type === "hello") return this.reply(errorFrame("already_authenticated", "this session is already authenticated", undefined));
    if (this.requestsInFlight >= this.core.limits.requestsInFlightPerSessionMax) {
      return this.reply(
        errorFrame(
          "rate_limited",
          `at most ${this.core.limits.requestsInFlightPerSessionMax} requests in flight per session`,
          frame.requestId,
        ),
      );
    }
    // Past the edge's bound, refused before any work: the client backs off instead of queueing here.
    if (this.core.requestsInFlight >= this.core.limits.requestsInFlightMax) {
      const refusal = errorFrame("overloaded", `this edge has ${this.core.requestsInFlight} requests in flight`, frame.requestId);
      return this.reply({ ...refusal, retryAfterMs: this.core.limits.overloadedRetryAfterMs });
    }
    // The request's buckets (per session, per user here): refused before any of it is done, with the wait.
    const kind = rateLimitedKindOf(frame.type);
    if (kind !== undefined) {
      const retryAfterMs = this.rateLimitsOf(userId).admit(kind, this.core.ephemeral.monotonicNowMs());
      if (retryAfterMs > 0)
        return this.reply({
          ...errorFrame("rate_limited", `too many ${kind} requests; retry after ${retryAfterMs} ms`, frame.requestId),
          retryAfterMs,
        });
    }
    if (frame.type === "typing") {
      const nowMs = this.core.ephemeral.monotonicNowMs();
      const typingLimiter = (this.state.typingLimiter ??= new TypingRateLimiter(
        this.core.limits.typingIntervalMs,
        this.core.limits.typingConversationsPerSessionMax,
      ));
      if (!typingLimiter.tryAccept(frame.conversationId, nowMs)) {
        const { typingIntervalMs, typingConversationsPerSessionMax } = this.core.limits;
        const detail = `typing at most once every ${typingIntervalMs} ms per conversation, in at most ${typingConversationsPerSessionMax} conversations at a time`;
        return this.reply({
          ...errorFrame("rate_limited", detail, frame.requestId),
          retryAfterMs: typingLimiter.retryAfterMs(frame.conversationId, nowMs),
        });
      }
    }
    this.requestsInFlight++;
    this.core.requestsInFlight++;
    // When the frame arrived (set above): a send's ack latency counts from it.
    const receivedAtMs = this.lastHeardAtMsValue;
    if (frame.type === "send") this.core.metrics.sendStarted();
    // A frame a cell serves is a trace's first span when tracing is on (docs/decisions/0034); the edge's own
    // (typing, watchPresence, refresh) are not traced. With tracing off it still gets a trace context of
    // its own, carried to the cell, so the lines about it here and there share its traceId (0037); but a
    // send's is derived from the send itself (sendTraceId) wherever a line needs it, and carried nowhere.
    const tracing = activeTracing();
    const cellServed = frame.type !== "typing" && frame.type !== "watchPresence" && frame.type !== "refresh";
    const traceparent = tracing === undefined && cellServed && frame.type !== "send" ? this.core.traceIds.next() : undefined;
    const context: RequestContext =
      traceparent === undefined ? { userId, deviceId, homeCellId } : { userId, deviceId, homeCellId, traceparent };
    // With tracing on, the span's trace id, read inside it (the error handler below runs outside); off, the
    // traceparent's, parsed only if a line is written.
    let traceId: string | undefined;
    const served =
      tracing === undefined || !cellServed
        ? this.serveFrame(context, frame)
        : tracing.inSpan(
            frame.type === "send" ? "edge.send" : "edge.request",
            { "cellwire.frame.type": frame.type },
            () => {
              traceId = activeTraceId();
              return this.serveFrame(context, frame);
            },
            failureOf,
          );
    void served
      .then(
        (reply) => {
          if (reply.type === "conversation") this.core.ephemeral.typing.conversationSeen(reply.conversation);
          return reply;
        },
        (error: unknown): ServerFrame =>
          errorFrameFor(error, frame.requestId, (message) => {
            const lineTraceId = traceIdForLine(frame, context, traceId);
            this.core.logger.error(message, lineTraceId === undefined ? undefined : { traceId: lineTraceId });
          }),
      )
      .then((reply) => {
        try {
          this.reply(reply);
          if (frame.type === "send")
            this.core.metrics.sendAnswered(sendAnswerOf(reply), this.core.ephemeral.monotonicNowMs() - receivedAtMs);
        } catch (error) {
          // Writing the reply threw (a bug): logged, never an unhandled rejection that would end the edge.
          this.core.logger.error(`answering a ${frame.type} frame failed: ${error instanceof Error ? error.message : String(error)}`);
        }
      })
      .finally(() => {
        this.requestsInFlight--;
        this.core.requestsInFlight--;
        // After the reply above: a draining edge never cuts a request off (edge-drain.ts).
        if (this.closeWhenIdleRequested && this.requestsInFlight === 0) this.closeNow();
      });
  }

  /** A typing indicator for this session's user; not written back to the device that typed. */
  deliverTyping(typing: TypingIndicator, serializedFrame: string): void {
    if (this.state.kind !== "open") return;
    if (typing.userId === this.state.userId && typing.deviceId === this.state.deviceId) return;
    this.write(serializedFrame, "typing");
  }

  /** A `presence` frame about a user this session watches. */
  deliverPresence(serializedFrame: string): void {
    if (this.state.kind === "open") this.write(serializedFrame, "presence");
  }

  /** Reads the mailbox again from this session's cursor (see MailboxCursor.requestSync). */
  private catchUp(): void {
    if (this.state.kind === "open" && this.state.cursor.requestSync()) void this.sync();
  }

  /**
   * The session's moment of a catch-up came (catch-up-pacer.ts): reads again the mailbox when it is
   * homed in one of the scope's cells (or the scope is everything), and the conversations cached as homed
   * there (or all it follows). Resolves once the mailbox read is done; conversation reads go through the
   * edge's limiter. Never rejects: a mailbox that cannot be read closes the session (sync).
   */
  async catchUpNow(scope: CatchUpScope): Promise<void> {
    if (this.state.kind !== "open") return;
    const mailboxOwed = scope.everything || scope.cellIds.has(this.state.homeCellId);
    // Started first: it runs until its first await, so the conversation reads below do not delay it.
    const mailboxRead = mailboxOwed && this.state.cursor.requestSync() ? this.sync() : undefined;
    if (scope.everything) {
      for (const [conversationId, cursor] of this.followedConversations())
        if (cursor.requestSync()) void this.readConversation(conversationId);
    } else {
      for (const cellId of scope.cellIds) this.catchUpConversationsIn(cellId);
    }
    await mailboxRead;
  }

  /** Whether a change of `cellId`'s workers concerns this session: its mailbox, or a conversation it follows, lives there. */
  isConcernedBy(cellId: string): boolean {
    if (this.state.kind !== "open") return false;
    if (this.state.homeCellId === cellId) return true;
    for (const conversationId of this.followedConversations().keys())
      if (this.core.handler.cachedConversationHome(conversationId) === cellId) return true;
    return false;
  }

  get homeCellId(): string | undefined {
    return this.state.kind === "open" ? this.state.homeCellId : undefined;
  }

  /**
   * The user's mailbox moved (directory.changed): the session takes the newer home and reads the mailbox
   * from it, so events appended there after the move are not missed until the next live event.
   */
  homeMoved(home: HomeLocation): void {
    if (this.followHome(home)) this.catchUp();
  }

  /** The socket closed (either side). */
  closed(): void {
    if (this.state.kind === "closed") return;
    const userId = this.userId;
    this.state = { kind: "closed" };
    clearTimeout(this.authTimer);
    this.authTimer = undefined;
    for (const read of this.conversationReads?.values() ?? []) clearTimeout(read.retryTimer);
    this.conversationReads = undefined;
    this.core.forget(this, userId);
  }

  deliver(event: SequencedEvent, serializedFrame: string): void {
    if (this.state.kind !== "open") {
      if (this.state.kind === "authenticating") this.state.mailboxEventArrived = true;
      return;
    }
    const decision = this.state.cursor.live(event, serializedFrame.length);
    if (decision === "send") {
      this.write(serializedFrame, "event");
      this.mailboxEventWritten(event);
    } else if (decision === "start_sync") void this.sync();
  }

  /**
   * A live message of one of the user's conversations. A conversation without a cursor starts one: at
   * the member's join point in a resumed session (its earlier messages are read from the log first), at
   * this message in a live one.
   */
  deliverMessage(message: Message, serializedFrame: string, recipientCount: number): void {
    if (this.state.kind !== "open") return;
    const { conversations, resumed, heldBytes } = this.state;
    // The fan-out is charged after the fact, once, by the session of the device that sent the message: the
    // edge cannot know a conversation's member count before its cell answers (docs/protocol.md, "Rate limits").
    if (message.senderUserId === this.state.userId && message.senderDeviceId === this.state.deviceId) {
      this.rateLimitsOf(message.senderUserId).chargeFanOut(recipientCount, this.core.ephemeral.monotonicNowMs());
    }
    let cursor = conversations?.get(message.conversationId);
    if (conversations === undefined || cursor === undefined) {
      const heldMax = this.core.limits.heldEventsPerSessionMax;
      cursor = resumed
        ? ConversationCursor.reading(undefined, heldMax, heldBytes)
        : ConversationCursor.liveFrom(message, heldMax, heldBytes);
      this.follow(message.conversationId, cursor);
    } else {
      // Re-inserted: the Map's order is the least recently used first, for the bound.
      conversations.delete(message.conversationId);
      conversations.set(message.conversationId, cursor);
    }
    const decision = cursor.live(message, serializedFrame.length);
    if (decision === "send") {
      this.write(serializedFrame, "message");
      // Live deliveries only: a message read from the log is late by the time the session was away.
      this.core.metrics.messageDelivered(this.core.tokenLifetime.wallNowMs() - message.sentAtMs);
    } else if (decision === "start_sync" || (decision === "hold" && !this.initialSyncRunning))
      void this.readConversation(message.conversationId);
  }

  /**
   * Reads again the logs of the conversations homed in `cellId` (its workers changed: a live message
   * published by one that died may never come), from each cursor.
   */
  private catchUpConversationsIn(cellId: string): void {
    if (this.state.kind !== "open") return;
    for (const [conversationId, cursor] of this.followedConversations()) {
      if (this.core.handler.cachedConversationHome(conversationId) === cellId && cursor.requestSync())
        void this.readConversation(conversationId);
    }
  }

  /**
   * The edge drains (edge-drain.ts): close with going_away once every request this session is serving is
   * answered. Requests that arrive meanwhile are served too (the client has not seen the close yet, and
   * refusing them would only make it send them again elsewhere); the drain's grace period bounds the wait.
   */
  closeWhenIdle(): void {
    if (this.state.kind === "closed") return;
    this.closeWhenIdleRequested = true;
    if (this.requestsInFlight === 0) this.closeNow();
  }

  closeNow(): void {
    this.close("going_away", "the edge is restarting; reconnect to another edge");
  }

  close(reason: CloseReason, detail: string): void {
    if (this.state.kind === "closed") return;
    const { code } = closeCodes[reason];
    this.closed();
    this.transport.close(code, detail.slice(0, 120));
  }

  private async authenticate(hello: HelloFrame): Promise<void> {
    const authenticating: SessionState = { kind: "authenticating", mailboxEventArrived: false };
    this.state = authenticating;
    if (!protocolVersionsSupported.includes(hello.protocolVersion)) {
      return this.close("unsupported_protocol_version", `this edge speaks protocol version ${protocolVersionsSupported.join(", ")}`);
    }
    const outcome = await this.core.verifier.verify(hello.token);
    if (this.state.kind !== "authenticating") return;
    if (!outcome.ok) return this.close(outcome.reason, outcome.detail);
    const { userId } = outcome.identity;
    const deviceId = outcome.identity.deviceId ?? hello.deviceId ?? "default";
    // Checked here, with no await before attach() counts this session, so that hellos of one user verified
    // at the same time cannot all pass the check before any of them is counted. At the limit, a session of
    // the user that has gone silent (its close never arrived) makes room rather than keep this one out.
    if (this.core.deliveries.sessionCount(userId) >= this.core.limits.sessionsPerUserMax && !this.core.closeSilentSessionOf(userId)) {
      this.core.tooManySessionsRefusals++;
      return this.close("too_many_sessions", `at most ${this.core.limits.sessionsPerUserMax} sessions per user on one edge`);
    }
    // The session registers for its user's deliveries before it asks the directory, and stays
    // "authenticating" until it opens: frames sent before welcome still close it, and live events published
    // meanwhile are not lost, since the backlog read after the registration holds them (docs/decisions/0011).
    // Registered first, it also hears every event appended after the directory's answer, which is what
    // lets a user placed by this very hello skip that read (0043).
    try {
      await this.core.deliveries.attach(userId, this);
    } catch (error) {
      this.core.deliveries.detach(userId, this);
      if (this.state.kind !== "authenticating") return;
      this.core.logger.error(`registering the deliveries of ${userId} failed: ${String(error)}`);
      return this.close("unavailable", "the edge is not receiving deliveries");
    }
    if (this.state.kind !== "authenticating") {
      this.core.deliveries.detach(userId, this);
      return;
    }
    let home: HomeLocation & { readonly placedNow: boolean };
    try {
      home = await this.homeOf(userId);
    } catch (error) {
      this.core.deliveries.detach(userId, this);
      if (this.state.kind !== "authenticating") return;
      this.reply(errorFrameFor(error, undefined, (message) => this.core.logger.error(message)));
      return this.close("unavailable", "the directory did not answer");
    }
    if (this.state.kind !== "authenticating") {
      this.core.deliveries.detach(userId, this);
      return;
    }
    // Checked last, with no await until the session is counted as the user's: a revocation that arrives
    // after this finds the session and closes it.
    if (this.core.isRevoked(outcome.identity)) {
      this.core.deliveries.detach(userId, this);
      return this.close("token_revoked", "the user's sessions were revoked; sign in again");
    }
    // A device starting live at the head or from seq 0 (with no incarnation to check) of a user the
    // directory placed for this hello, with no mailbox event heard since the registration: the mailbox is
    // empty at its head 0, which the read would only confirm (0043).
    const fromTheStart = hello.resumeAfterSeq === undefined || (hello.resumeAfterSeq === 0 && hello.mailboxIncarnation === undefined);
    const mailboxKnownEmpty = home.placedNow && fromTheStart && !authenticating.mailboxEventArrived;
    this.expiresAtMs = outcome.identity.expiresAtMs;
    const heldBytes = new HeldBytesBudget(this.core.limits.heldBytesPerSessionMax);
    const cursor = new MailboxCursor(hello.resumeAfterSeq, this.core.limits.heldEventsPerSessionMax, heldBytes, hello.mailboxIncarnation);
    this.state = {
      kind: "open",
      userId,
      deviceId,
      homeCellId: home.cellId,
      homeEpoch: home.epoch,
      cursor,
      heldBytes,
      conversations: undefined,
      resumed: hello.resumeAfterSeq !== undefined,
      typingLimiter: undefined,
    };
    for (const listed of hello.conversations ?? []) {
      this.follow(listed.conversationId, ConversationCursor.reading(listed.afterSeq, this.core.limits.heldEventsPerSessionMax, heldBytes));
    }
    clearTimeout(this.authTimer);
    this.authTimer = undefined;
    this.core.sessionOpened(this, userId);
    this.core.ephemeral.presence.sessionOpened(userId);
    this.reply({
      type: "welcome",
      protocolVersion,
      // Made for the welcome and kept by the client only: the edge never needs it again, so an idle session does not hold it.
      sessionId: randomUUID(),
      userId,
      deviceId,
      cellId: home.cellId,
      heartbeatIntervalMs: this.core.limits.heartbeatIntervalMs,
      tokenExpiresAtMs: this.expiresAtMs,
    });
    await this.initialSync(mailboxKnownEmpty);
  }

  /**
   * The user's home cell, asked again while the directory does not answer: a directory restart takes a
   * second or two (docs/operations.md), and closing the hello would only bring the client back to verify
   * its token and ask again. The retries end before half the hello's deadline, so the auth timer does not
   * close a hello that is still waiting for the directory as if the client had been silent.
   */
  private async homeOf(userId: string): Promise<HomeLocation & { readonly placedNow: boolean }> {
    const { monotonicNowMs } = this.core.ephemeral;
    const startedAtMs = monotonicNowMs();
    const budgetMs = this.core.limits.authTimeoutMs / 2;
    // The delays slept count whatever the clock says (a test's clock may stand still), and the clock
    // counts the requests' own time too.
    let sleptMs = 0;
    for (let attempt = 0; ; attempt++) {
      try {
        return await this.core.handler.homeOf(userId);
      } catch (error) {
        const delayMs = retryDelayMs(homeRetryDelayMsFirst, attempt, Number.POSITIVE_INFINITY);
        const elapsedMs = Math.max(sleptMs, monotonicNowMs() - startedAtMs);
        const directoryAway = error instanceof CellwireError && error.code === "directory_unavailable";
        if (!directoryAway || this.state.kind !== "authenticating" || elapsedMs + delayMs > budgetMs) throw error;
        await sleep(delayMs);
        sleptMs += delayMs;
        if (this.state.kind !== "authenticating") throw error;
      }
    }
  }

  /**
   * The backlog: the mailbox after resumeAfterSeq (whose joined events add conversations to follow), then
   * the log of every followed conversation after its cursor, then `synced`. Live events and messages that
   * arrive meanwhile are held by their cursors. `mailboxKnownEmpty`: the mailbox's first page is known to
   * be empty at head 0 (a user placed by this hello, 0043), so it is not read.
   */
  private async initialSync(mailboxKnownEmpty: boolean): Promise<void> {
    await this.sync(mailboxKnownEmpty);
    if (this.state.kind !== "open") return;
    const pending = [...this.followedConversations()].filter(([, cursor]) => cursor.isSyncing).map(([conversationId]) => conversationId);
    let next = 0;
    const lane = async (): Promise<void> => {
      for (let conversationId = pending[next++]; conversationId !== undefined; conversationId = pending[next++]) {
        if (this.state.kind !== "open") return;
        await this.readConversation(conversationId);
      }
    };
    await Promise.all(Array.from({ length: Math.min(this.core.limits.conversationReadsPerSessionMax, pending.length) }, lane));
    this.initialSyncRunning = false;
    if (this.state.kind !== "open") return;
    this.reply(syncedFrame(this.state.cursor));
    // Conversations first seen live during the backlog waited for it; they are read now.
    for (const [conversationId, cursor] of this.followedConversations()) if (cursor.isSyncing) void this.readConversation(conversationId);
  }

  /**
   * One page of a conversation's log (or the mailbox). A cell that answers `overloaded` is asked again
   * after the retry-after it named (a few times): closing the session would bring the client back to read
   * every conversation again, which is more load, not less.
   */
  private readPageWithBackoff(userId: string, conversationId: string, afterSeq: number | null, limit: number): Promise<ConversationPage> {
    return this.withOverloadBackoff(() =>
      this.core.conversationReads.run(() => this.core.handler.conversationPage(userId, conversationId, afterSeq, limit)),
    );
  }

  private async withOverloadBackoff<T>(read: () => Promise<T>): Promise<T> {
    for (let attempt = 1; ; attempt++) {
      try {
        return await read();
      } catch (error) {
        if (!(error instanceof RemoteError) || error.code !== "overloaded" || attempt >= overloadedReadAttemptsMax) throw error;
        await sleep(error.retryAfterMs ?? this.core.limits.overloadedRetryAfterMs);
        if (this.state.kind !== "open") throw error;
      }
    }
  }

  /** The conversations this session follows (none before it opens or follows one). */
  private followedConversations(): ReadonlyMap<string, ConversationCursor> {
    return (this.state.kind === "open" ? this.state.conversations : undefined) ?? noConversations;
  }

  /** Starts following a conversation; past the bound the least recently used idle cursor is forgotten. */
  private follow(conversationId: string, cursor: ConversationCursor): void {
    if (this.state.kind !== "open") return;
    const conversations = (this.state.conversations ??= new Map());
    conversations.get(conversationId)?.release();
    conversations.delete(conversationId);
    conversations.set(conversationId, cursor);
    if (conversations.size <= this.core.limits.conversationsPerSessionMax) return;
    for (const [candidateId, candidate] of conversations) {
      if (candidateId === conversationId || candidate.isSyncing) continue;
      candidate.release();
      conversations.delete(candidateId);
      return;
    }
  }

  /** A mailbox event reached the device: a joined event makes the session follow its conversation. */
  private mailboxEventWritten(event: SequencedEvent): void {
    if (this.state.kind !== "open" || event.event.kind !== "joined") return;
    const { conversationId, afterSeq } = event.event;
    if (this.followedConversations().has(conversationId)) return;
    this.follow(conversationId, ConversationCursor.reading(afterSeq, this.core.limits.heldEventsPerSessionMax, this.state.heldBytes));
    if (!this.initialSyncRunning) void this.readConversation(conversationId);
  }

  /**
   * Reads one conversation's log from its cursor until it meets the live messages held meanwhile,
   * writing each message once and in order. One read at a time per conversation (a second request while
   * one runs is served by it); reads across the edge are bounded by the core's limiter. A conversation
   * the user is not a member of (any more) is forgotten; a log that cannot be read closes the session as
   * unavailable, and the client resumes from its cursors.
   */
  private async readConversation(conversationId: string): Promise<void> {
    if (this.state.kind !== "open") return;
    const reads = (this.conversationReads ??= new Map());
    let read = reads.get(conversationId);
    if (read?.reading === true) return;
    if (read === undefined) {
      read = { reading: true, failedReads: 0, retryTimer: undefined };
      reads.set(conversationId, read);
    } else read.reading = true;
    const { userId } = this.state;
    try {
      for (let round = 0; ; round++) {
        const cursor = this.followedConversations().get(conversationId);
        if (cursor === undefined || !cursor.isSyncing) return;
        if (round >= conversationReadRoundsMax)
          throw new CellwireError("internal", `the log of ${conversationId} did not settle after ${round} reads`);
        for (;;) {
          const { afterSeq, limit } = cursor.nextPageRequest(conversationPageLimitMax);
          const page = await this.readPageWithBackoff(userId, conversationId, afterSeq, limit);
          if (this.state.kind !== "open") return;
          const outcome = cursor.applyPage(page);
          for (const message of outcome.messages) this.reply({ type: "message", message });
          if (outcome.done) break;
        }
        const { messages } = cursor.finishSync();
        for (const message of messages) this.reply({ type: "message", message });
      }
    } catch (error) {
      if (this.state.kind !== "open") return;
      if (error instanceof CellwireError && error.code === "not_a_member") {
        this.state.conversations?.get(conversationId)?.release();
        this.state.conversations?.delete(conversationId);
        return;
      }
      if (error instanceof CellwireError && cellOutageCodes.has(error.code)) {
        // A conversation homed in a cell that does not answer must not keep the user from the rest of
        // their conversations (a cell is the unit of fault isolation): it is read again later, its live
        // messages held meanwhile (bounded), and the session stays open.
        this.readConversationLater(conversationId);
        return;
      }
      this.reply(errorFrameFor(error, undefined, (message) => this.core.logger.error(message)));
      this.close("unavailable", "a conversation could not be read");
    } finally {
      read.reading = false;
      // Forgotten unless a read again is scheduled (readConversationLater): its failed reads count on.
      if (read.retryTimer === undefined && this.conversationReads?.get(conversationId) === read)
        this.conversationReads.delete(conversationId);
    }
  }

  /** Reads a conversation again after a jittered, growing delay (its cell did not answer). */
  private readConversationLater(conversationId: string): void {
    if (this.state.kind !== "open") return;
    const reads = (this.conversationReads ??= new Map());
    let read = reads.get(conversationId);
    if (read === undefined) {
      read = { reading: false, failedReads: 0, retryTimer: undefined };
      reads.set(conversationId, read);
    }
    if (read.retryTimer !== undefined) return;
    const attempt = read.failedReads++;
    const delayMs = retryDelayMs(conversationRetryDelayMsFirst, attempt, conversationRetryDelayMsMax);
    const scheduled = read;
    scheduled.retryTimer = setTimeout(() => {
      scheduled.retryTimer = undefined;
      void this.readConversation(conversationId);
    }, delayMs);
  }

  /**
   * Reads the mailbox from the cursor until it meets the live events held meanwhile, writing each event
   * once and in order, then `synced`. Live events that arrive meanwhile are held by the cursor. A mailbox
   * that cannot be read closes the session as unavailable: the client resumes from its last seq.
   */
  private async sync(firstPageKnownEmpty = false): Promise<void> {
    if (this.state.kind !== "open") return;
    const { cursor, userId, homeCellId, homeEpoch } = this.state;
    if (this.syncRunning) return;
    this.syncRunning = true;
    let knownEmpty = firstPageKnownEmpty;
    try {
      for (;;) {
        for (;;) {
          const { afterSeq, limit } = cursor.nextPageRequest(mailboxPageLimitMax);
          // What the mailbox's owner answers for a mailbox nothing was ever appended to.
          const page = knownEmpty
            ? { events: [], headSeq: 0, floorSeq: 0, incarnation: undefined, home: { cellId: homeCellId, epoch: homeEpoch } }
            : await this.withOverloadBackoff(() => this.core.handler.mailboxPage(userId, afterSeq, limit));
          knownEmpty = false;
          if (this.state.kind !== "open") return;
          this.followHome(page.home);
          const outcome = cursor.applyPage(page);
          if (outcome.kind === "resync") {
            const { incarnation } = cursor;
            this.reply({
              type: "resync",
              headSeq: outcome.headSeq,
              ...(incarnation === undefined ? {} : { mailboxIncarnation: incarnation }),
            });
            // Another mailbox is read from its floor on, like a new device's; otherwise the head is reached.
            if (outcome.done) break;
            continue;
          }
          for (const event of outcome.events) this.writeMailboxEvent(event);
          if (outcome.done) break;
        }
        const { events, complete } = cursor.finishSync();
        for (const event of events) this.writeMailboxEvent(event);
        if (complete) break;
      }
      // The initial sync sends `synced` once the conversations are read too.
      if (!this.initialSyncRunning) this.reply(syncedFrame(cursor));
    } catch (error) {
      if (this.state.kind !== "open") return;
      this.reply(errorFrameFor(error, undefined, (message) => this.core.logger.error(message)));
      this.close("unavailable", "the mailbox could not be read");
    } finally {
      this.syncRunning = false;
      if (this.state.kind === "open" && this.state.cursor.isSyncing) void this.sync();
    }
  }

  private writeMailboxEvent(event: SequencedEvent): void {
    this.reply({ type: "event", seq: event.seq, event: event.event });
    this.mailboxEventWritten(event);
  }

  /** Takes `home` when it is newer than the session's; true when it did. */
  private followHome(home: HomeLocation): boolean {
    if (this.state.kind !== "open" || home.epoch <= this.state.homeEpoch) return false;
    this.state = { ...this.state, homeCellId: home.cellId, homeEpoch: home.epoch };
    return true;
  }

  private sendOrderOf(): SendOrder {
    // Twice the sends that can be in flight: room for as many that failed and wait for their retries.
    this.sendOrder ??= new SendOrder({
      entriesMax: 2 * this.core.limits.requestsInFlightPerSessionMax,
      holdMs: this.core.limits.sendOrderHoldMs,
    });
    return this.sendOrder;
  }

  /**
   * A send in its session's order (docs/decisions/0020): it names the send before it on this session that
   * is not known stored. When the cell answers out_of_order because that one is still on its way (a retry
   * after a NATS drop or a slow attempt, overtaken by this one), the send waits for it here and, once it
   * is acked, goes again at once within the same deadline, instead of costing its client a backoff.
   */
  private async serveSend(context: RequestContext, frame: SendFrame): Promise<ServerFrame> {
    const order = this.sendOrderOf();
    const deadlineAtMs = this.core.handler.deadlineFromNow();
    const key = sendInFlightKey(frame.conversationId, frame.clientMessageId);
    const attempt = async (): Promise<ServerFrame> => {
      let predecessor = order.begin(frame.conversationId, frame.clientMessageId, this.core.ephemeral.monotonicNowMs());
      let reply = await this.core.handler.handle(context, frame, predecessor, deadlineAtMs);
      // Bounded: each round needs a predecessor acked meanwhile, and acks only shorten the list before it.
      for (let round = 0; round < sendOrderRoundsMax && predecessor !== undefined && isOutOfOrder(reply); round++) {
        const before = this.sendsInFlight?.get(sendInFlightKey(frame.conversationId, predecessor));
        if (before === undefined || (await before).type !== "ack" || this.core.ephemeral.monotonicNowMs() >= deadlineAtMs) break;
        predecessor = order.begin(frame.conversationId, frame.clientMessageId, this.core.ephemeral.monotonicNowMs());
        reply = await this.core.handler.handle(context, frame, predecessor, deadlineAtMs);
      }
      return reply;
    };
    const pending = attempt()
      .catch((error: unknown): ServerFrame =>
        errorFrameFor(error, frame.requestId, (message) => {
          // Tracing on: the active span's (this runs inside edge.send); off: the send's own (0037).
          const traceId = traceIdForLine(frame, context, activeTraceId());
          this.core.logger.error(message, traceId === undefined ? undefined : { traceId });
        }),
      )
      .then((reply) => {
        this.sendSettled(frame, reply);
        return reply;
      })
      .finally(() => {
        if (this.sendsInFlight?.get(key) === pending) this.sendsInFlight.delete(key);
      });
    (this.sendsInFlight ??= new Map()).set(key, pending);
    return pending;
  }

  /** Records how a send ended, for the order of the session's later sends to its conversation. */
  private sendSettled(frame: SendFrame, reply: ServerFrame): void {
    this.sendOrderOf().settle(frame.conversationId, frame.clientMessageId, sendAnswerOf(reply), this.core.ephemeral.monotonicNowMs());
  }

  private serveFrame(context: RequestContext, frame: ClientRequestFrame): Promise<ServerFrame> {
    return frame.type === "send" ? this.serveSend(context, frame) : this.serve(context, frame);
  }

  /** Typing and watchPresence are served by the edge itself; every other request by a cell. */
  private serve(context: RequestContext, frame: ClientRequestFrame): Promise<ServerFrame> {
    switch (frame.type) {
      case "typing":
        return this.core.ephemeral.typing.handle(context, frame);
      case "watchPresence":
        return this.core.watchPresence(this, frame);
      case "refresh":
        return this.refresh(frame);
      default:
        return this.core.handler.handle(context, frame);
    }
  }

  /**
   * A new token on the open socket, verified like a hello's. It must name the session's user (and its
   * device, when it names one) and not be revoked; then the session's expiry moves to the new token's.
   * Any refusal leaves the old expiry standing, and the session open until then.
   */
  private async refresh(frame: RefreshFrame): Promise<ServerFrame> {
    const outcome = await this.core.verifier.verify(frame.token);
    if (this.state.kind !== "open") return errorFrame("token_rejected", "the session is closing", frame.requestId);
    if (!outcome.ok) return errorFrame("token_rejected", `${outcome.reason}: ${outcome.detail}`, frame.requestId);
    const { identity } = outcome;
    if (identity.userId !== this.state.userId || (identity.deviceId !== undefined && identity.deviceId !== this.state.deviceId)) {
      return errorFrame("token_user_mismatch", "the token names another user or device than this session's", frame.requestId);
    }
    if (this.core.isRevoked(identity))
      return errorFrame("token_rejected", "the token was issued before the user's sessions were revoked", frame.requestId);
    this.expiresAtMs = identity.expiresAtMs;
    return { type: "refreshed", requestId: frame.requestId, tokenExpiresAtMs: identity.expiresAtMs };
  }

  private reply(frame: ServerFrame): void {
    if (this.state.kind === "closed") return;
    if (frame.type === "error") this.core.metrics.errorSent(frame.code);
    this.write(JSON.stringify(frame), frame.type);
  }

  /** `type`: the frame's, for the count of frames sent (the text is not parsed again for it). */
  private write(text: string, type: SentFrameType): void {
    this.core.metrics.frameSent(type);
    this.sendReported(this.transport.send(text));
  }

  /**
   * How a frame's write went: at once from `send`, or later from a transport that writes at the end of
   * the turn (uws-transport.ts).
   */
  sendReported(outcome: SendOutcome): void {
    // A frame sent whole leaves nothing buffered: the buffer is only read when the send reported backpressure.
    if (outcome === "dropped" || (outcome === "backpressure" && this.transport.bufferedBytes() > this.core.limits.sendBufferBytesMax)) {
      this.close("slow_consumer", "the client reads too slowly");
    }
  }
}

/** Rounds a send that overtook its predecessor waits for it and goes again (serveSend). */
const sendOrderRoundsMax = 4;

function sendInFlightKey(conversationId: string, clientMessageId: string): string {
  return `${conversationId}\n${clientMessageId}`;
}

/** How a send was answered, as the acks counter labels it. */
function sendAnswerOf(reply: ServerFrame): SendAnswer {
  if (reply.type === "ack") return "stored";
  return reply.type === "error" && !reply.retryable ? "final" : "retryable";
}

function isOutOfOrder(reply: ServerFrame): boolean {
  return reply.type === "error" && reply.code === "out_of_order";
}

/** `synced` at the cursor, naming the mailbox its seq counts in when a page named one (docs/decisions/0021). */
function syncedFrame(cursor: MailboxCursor): ServerFrame {
  const { incarnation } = cursor;
  return { type: "synced", seq: cursor.seq ?? 0, ...(incarnation === undefined ? {} : { mailboxIncarnation: incarnation }) };
}

/** The error code of a reply frame, for its span's status. */
function failureOf(reply: ServerFrame): string | undefined {
  return reply.type === "error" ? reply.code : undefined;
}

/** What names a send for good (its trace id with tracing off, docs/decisions/0037), as its cell request will. */
function sendIdentity(context: RequestContext, frame: SendFrame): SendIdentity {
  return {
    senderUserId: context.userId,
    senderDeviceId: context.deviceId,
    conversationId: frame.conversationId,
    clientMessageId: frame.clientMessageId,
  };
}

/**
 * The traceId of a line about a request (docs/decisions/0037): its span's with tracing on (`spanTraceId`);
 * off, a send's derived from the send, any other request's from the traceparent its edge gave it.
 */
function traceIdForLine(frame: ClientRequestFrame, context: RequestContext, spanTraceId: string | undefined): string | undefined {
  if (spanTraceId !== undefined) return spanTraceId;
  return frame.type === "send" ? sendTraceId(sendIdentity(context, frame)) : traceIdOf(context.traceparent);
}
