// In-memory stand-ins for everything an EdgeCore talks to (socket, token verifier, directory, cell
// router, conversation logs, delivery source, typing publisher, presence, clock, logger), so the session
// logic runs in process and every effect is observable.
// Used by the edge-core*.test.ts files and edge-server.integration.test.ts (the whole fake edge), and by
// the hub integration tests (Waiters, RecordingLogger).
import { Waiters } from "@cellwire/testkit";
import {
  ConcurrencyLimiter,
  devDirectConversationKey,
  routerDefaults,
  type LogFields,
  type ServiceLogger,
  type EntryResult,
  type DirectoryCache,
  type DirectoryCacheLookup,
  type TraceIds,
} from "@cellwire/cluster";
import {
  decodeJsonText,
  decodeServerFrame,
  deliveryBatch,
  protocolVersion,
  type CellReply,
  type CellRequest,
  type DeliveryBatch,
  type DirectoryEntry,
  type MailboxEvent,
  type Message,
  type PresenceMessage,
  type PresenceState,
  type ServerFrame,
} from "@cellwire/protocol";
import { RevocationList } from "../src/auth/revocation-list.ts";
import type { TokenVerifier, VerifyOutcome } from "../src/auth/token-verifier.ts";
import { CatchUpPacer, type CatchUpClock } from "../src/catch-up-pacer.ts";
import type { DeliverySource, DeliveryTarget } from "../src/delivery-hub.ts";
import { createEdgeDirectoryCache } from "../src/directory-cache.ts";
import type { SessionMetrics } from "../src/edge-metrics.ts";
import { EdgeCore, type EdgeLimits, type SendOutcome, type Session, type SessionTransport } from "../src/edge-core.ts";
import { EveryoneVisible, type PresenceAccess } from "../src/presence/presence-access.ts";
import type { PresenceSource } from "../src/presence/presence-hub.ts";
import { PresenceTable, type PresenceChange } from "../src/presence/presence-table.ts";
import { RequestHandler, type CellRouting, type DirectoryLookups } from "../src/request-handler.ts";
import { ConversationMembers } from "../src/typing/conversation-members.ts";
import { TypingRelay, type TypingIndicator, type TypingPublisher } from "../src/typing/typing-relay.ts";

export const waitDeadlineMs = 5000;

export type Deferred<T> = { readonly promise: Promise<T>; resolve(value: T): void; reject(error: unknown): void };

export function deferred<T>(): Deferred<T> {
  let resolve!: (value: T) => void;
  let reject!: (error: unknown) => void;
  const promise = new Promise<T>((resolvePromise, rejectPromise) => {
    resolve = resolvePromise;
    reject = rejectPromise;
  });
  return { promise, resolve, reject };
}

/** The shared waiter of the test doubles (@cellwire/testkit); its default deadline is waitDeadlineMs. */
export { Waiters };

/**
 * A socket as the core sees it. Records every text written and the close; a write or a close after the
 * close breaks the SessionTransport contract and is recorded in `violations`.
 */
export class FakeTransport implements SessionTransport {
  readonly texts: string[] = [];
  readonly violations: string[] = [];
  closeCode: number | undefined;
  closeReason: string | undefined;
  /** What the next sends report, as uWS would under backpressure. */
  sendOutcome: SendOutcome = "sent";
  buffered = 0;
  private isClosed = false;
  private session: Session | undefined;
  private readonly waiters = new Waiters();

  get frames(): Record<string, unknown>[] {
    return this.texts.map((text) => JSON.parse(text) as Record<string, unknown>);
  }

  get isOpen(): boolean {
    return !this.isClosed;
  }

  attach(session: Session | undefined): void {
    this.session = session;
  }

  send(text: string): SendOutcome {
    if (this.isClosed) {
      this.violations.push(`send after close: ${text}`);
      return "dropped";
    }
    const decoded = decodeServerFrame(text);
    if (!decoded.ok)
      this.violations.push(`wrote a frame that is not a valid server frame (${decoded.failure.path} ${decoded.failure.reason}): ${text}`);
    this.texts.push(text);
    this.waiters.notify();
    return this.sendOutcome;
  }

  bufferedBytes(): number {
    return this.buffered;
  }

  close(code: number, reason: string): void {
    if (this.isClosed) {
      this.violations.push(`close(${code}) after close`);
      return;
    }
    this.isClosed = true;
    this.closeCode = code;
    this.closeReason = reason;
    // uWS reports its own close to the session, as edge-server.ts wires it.
    this.session?.closed();
    this.waiters.notify();
  }

  /** The client sends a text frame. */
  receive(text: string): void {
    if (this.isClosed) throw new Error("the test sent on a closed socket");
    this.session?.receive(text, false);
  }

  receiveJson(frame: Record<string, unknown>): void {
    this.receive(JSON.stringify(frame));
  }

  receiveBinary(): void {
    if (this.isClosed) throw new Error("the test sent on a closed socket");
    this.session?.receive("", true);
  }

  /** The client goes away: the socket reports its close, as uWS's close handler does. */
  peerClose(): void {
    if (this.isClosed) return;
    this.isClosed = true;
    this.session?.closed();
    this.waiters.notify();
  }

  /** The first frame (from `fromIndex` on) that matches, once written. */
  async frame(matches: (frame: Record<string, unknown>) => boolean, fromIndex = 0): Promise<Record<string, unknown>> {
    const found = (): Record<string, unknown> | undefined => this.frames.slice(fromIndex).find(matches);
    await this.waiters.until(() => found() !== undefined || this.isClosed, "a matching frame");
    const frame = found();
    if (frame === undefined)
      throw new Error(`closed with ${String(this.closeCode)} before a matching frame; frames: ${this.texts.join(" | ")}`);
    return frame;
  }

  async closed(): Promise<number> {
    await this.waiters.until(() => this.closeCode !== undefined, `the close; frames: ${this.texts.join(" | ")}`);
    return this.closeCode ?? 0;
  }
}

/**
 * Tokens are `valid:<userId>` or `valid:<userId>:<deviceId>`, `expired`, or anything else (invalid). A
 * valid token may end in `;exp=<ms>` (the identity's expiresAtMs; else it never expires) and `;iat=<ms>`.
 * `hold()` keeps the next verifications pending until released.
 */
export class FakeVerifier implements TokenVerifier {
  readonly tokens: string[] = [];
  private gate: Deferred<void> | undefined;

  hold(): () => void {
    const gate = deferred<void>();
    this.gate = gate;
    return () => {
      this.gate = undefined;
      gate.resolve();
    };
  }

  async verify(token: string): Promise<VerifyOutcome> {
    this.tokens.push(token);
    if (this.gate !== undefined) await this.gate.promise;
    if (token === "expired") return { ok: false, reason: "token_expired", detail: "exp has passed" };
    const [subject = "", ...claims] = token.split(";");
    const [prefix, userId, deviceId, ...rest] = subject.split(":");
    if (prefix !== "valid" || userId === undefined || userId === "" || rest.length > 0)
      return { ok: false, reason: "token_invalid", detail: "bad signature" };
    const claim = (name: string): number | undefined => {
      const found = claims.find((entry) => entry.startsWith(`${name}=`));
      return found === undefined ? undefined : Number(found.slice(name.length + 1));
    };
    return { ok: true, identity: { userId, deviceId, expiresAtMs: claim("exp") ?? Number.MAX_SAFE_INTEGER, issuedAtMs: claim("iat") } };
  }
}

/** The directory: users live on `userCells` (default cell "a"); conversations exist once placed. */
export class FakeDirectory implements DirectoryLookups {
  readonly userCells = new Map<string, string>();
  readonly conversations = new Map<string, DirectoryEntry>();
  resolveUserCalls = 0;
  /** When set, resolveUser fails with it. */
  resolveUserFailure: Error | undefined;
  /** When set, resolveUser waits for it. */
  resolveUserGate: Promise<void> | undefined;
  /** Users never seen: the first resolveUser of each places it (placed: true), as the directory's script does. */
  readonly unplacedUsers = new Set<string>();

  async resolveUser(userId: string): Promise<EntryResult> {
    this.resolveUserCalls++;
    if (this.resolveUserGate !== undefined) await this.resolveUserGate;
    if (this.resolveUserFailure !== undefined) throw this.resolveUserFailure;
    const placed = this.unplacedUsers.delete(userId);
    return { entry: { kind: "user", id: userId, cellId: this.userCells.get(userId) ?? "a", epoch: 1 }, placed };
  }

  async lookupConversation(conversationId: string): Promise<DirectoryEntry | undefined> {
    return this.conversations.get(conversationId);
  }

  async placeConversation(conversationId: string, preferredCellId: string): Promise<EntryResult> {
    const existing = this.conversations.get(conversationId);
    if (existing !== undefined) return { entry: existing, placed: false };
    const entry: DirectoryEntry = { kind: "conversation", id: conversationId, cellId: preferredCellId, epoch: 1 };
    this.conversations.set(conversationId, entry);
    return { entry, placed: true };
  }
}

type CellAnswer = (cellId: string, request: CellRequest) => Promise<CellReply>;

/**
 * The cells: every request is recorded; `answers` decides replies per request type. Without an answer,
 * a mailbox page is empty at seq 0 and anything else fails loudly.
 */
export class FakeCellRouting implements CellRouting {
  readonly requests: { readonly cellId: string; readonly request: CellRequest; readonly deadlineAtMs: number | undefined }[] = [];
  readonly answers = new Map<CellRequest["type"], CellAnswer>();
  /** The traceparent each request was given (tracing off, docs/decisions/0037), in the order of `requests`. */
  readonly traceparents: (string | undefined)[] = [];

  async request(cellId: string, request: CellRequest, deadlineAtMs?: number, traceparent?: string): Promise<CellReply> {
    this.requests.push({ cellId, request, deadlineAtMs });
    this.traceparents.push(traceparent);
    const answer = this.answers.get(request.type);
    if (answer !== undefined) return answer(cellId, request);
    if (request.type === "cell.mailboxPage")
      return { type: "cell.mailboxEvents", userId: request.userId, events: [], headSeq: 0, floorSeq: 0 };
    throw new Error(`FakeCellRouting has no answer for ${request.type}`);
  }

  requestsOf(type: CellRequest["type"]): CellRequest[] {
    return this.requests.filter((entry) => entry.request.type === type).map((entry) => entry.request);
  }
}

/**
 * Sessions per user, counted as the NATS hub counts them: a target counts from the start of attach.
 * A delivery batch reaches this edge's sessions of its recipients as the hub hands it over (messages to
 * deliverMessage, events to deliver, typing to deliverTyping, each with its frame encoded once), after a
 * round trip through JSON and the deliveryBatch decoder, so a batch no edge would accept fails the test.
 * Typing indicators it publishes are recorded and come back the same way, as NATS brings them back to
 * the hub.
 */
export class FakeDeliveries implements DeliverySource, TypingPublisher {
  readonly typingPublished: { readonly recipientUserIds: readonly string[]; readonly indicator: TypingIndicator }[] = [];
  readonly targets = new Map<string, Set<DeliveryTarget>>();
  /** When set, attach waits for it after registering the target (the hub's subscription flush). */
  attachGate: Promise<void> | undefined;
  attachFailure: Error | undefined;

  async attach(userId: string, target: DeliveryTarget): Promise<void> {
    let targets = this.targets.get(userId);
    if (targets === undefined) {
      targets = new Set();
      this.targets.set(userId, targets);
    }
    targets.add(target);
    if (this.attachGate !== undefined) await this.attachGate;
    if (this.attachFailure !== undefined) throw this.attachFailure;
  }

  detach(userId: string, target: DeliveryTarget): void {
    const targets = this.targets.get(userId);
    if (targets === undefined) return;
    targets.delete(target);
    if (targets.size === 0) this.targets.delete(userId);
  }

  sessionCount(userId: string): number {
    return this.targets.get(userId)?.size ?? 0;
  }

  publishTyping(recipientUserIds: readonly string[], indicator: TypingIndicator): void {
    this.typingPublished.push({ recipientUserIds: [...recipientUserIds], indicator });
    this.publishBatch({
      type: "delivery.batch",
      messages: [],
      events: [],
      typing: [{ recipientUserIds: [...recipientUserIds], ...indicator }],
    });
  }

  /** A delivery.batch arriving on the deliveries subject (from a worker, or a typist's edge). */
  publishBatch(batch: DeliveryBatch): void {
    const decoded = decodeJsonText(deliveryBatch, JSON.stringify(batch));
    if (!decoded.ok) throw new Error(`a delivery batch no edge would accept: ${decoded.failure.path} ${decoded.failure.reason}`);
    const { messages, events, typing } = decoded.value;
    for (const { recipientUserIds, message } of messages) {
      const frame = JSON.stringify({ type: "message", message });
      for (const userId of recipientUserIds)
        for (const target of this.targetsOf(userId)) target.deliverMessage(message, frame, recipientUserIds.length);
    }
    for (const { recipientUserId, seq, event } of events) {
      const frame = JSON.stringify({ type: "event", seq, event });
      for (const target of this.targetsOf(recipientUserId)) target.deliver({ seq, event }, frame);
    }
    for (const { recipientUserIds, ...indicator } of typing) {
      const frame = JSON.stringify({ type: "typing", ...indicator });
      for (const userId of recipientUserIds) for (const target of this.targetsOf(userId)) target.deliverTyping(indicator, frame);
    }
  }

  /** Publishes a live mailbox event of `userId` (a batch of that event alone, as its mailbox's owner does). */
  publish(userId: string, seq: number, event: MailboxEvent): void {
    this.publishBatch({ type: "delivery.batch", messages: [], events: [{ recipientUserId: userId, seq, event }], typing: [] });
  }

  /** Publishes a live message to `userId` (a batch of that message, with `userId` its one recipient). */
  publishMessage(userId: string, message: Message): void {
    this.publishBatch({ type: "delivery.batch", messages: [{ recipientUserIds: [userId], message }], events: [], typing: [] });
  }

  /** A copy: a session may detach while it is handed a delivery. */
  private targetsOf(userId: string): DeliveryTarget[] {
    return [...(this.targets.get(userId) ?? [])];
  }
}

/** The message with `seq` of a fake conversation log: ids derived from the conversation and the seq. */
export function logMessage(conversationId: string, seq: number, senderUserId = "alice"): Message {
  const tag = `${conversationId.slice(2, 8)}-${seq}`;
  return {
    conversationId,
    messageId: `m-${tag}`,
    seq,
    senderUserId,
    senderDeviceId: "phone",
    clientMessageId: `c-${tag}`,
    body: `message ${seq}`,
    sentAtMs: 1_700_000_000_000 + seq,
  };
}

/**
 * Conversation logs as their owners serve cell.messagesAfter: each conversation has gapless messages
 * 1..head and members with their join points. A page starts after the request's afterSeq (the member's
 * join point when null) and holds at most `limit` messages; a non-member is answered not_a_member.
 * Creating a log places the conversation in the fake directory. `hold()` keeps reads waiting until
 * released (the log is read then, as it is at that moment); `holdReplies()` reads the page at once and
 * keeps its reply until released (what is committed meanwhile is not in it); reads in flight are counted.
 */
export class FakeConversationLogs {
  private readonly logs = new Map<string, { head: number; readonly joinedAfterSeq: Map<string, number> }>();
  /** Held reads: of one conversation, or of every conversation under the key "*". */
  private readonly holds = new Map<string, Deferred<void>>();
  /** Held replies, by conversation: the page is read, then waits. */
  private readonly replyHolds = new Map<string, Deferred<void>>();
  readsInFlight = 0;
  readsInFlightMax = 0;
  /** Pages read from the logs so far (a held reply counts once its page is read). */
  pagesRead = 0;
  private readonly waiters = new Waiters();

  constructor(private readonly directory: FakeDirectory) {}

  /** A conversation homed in `cellId` whose members joined at the given seqs; its log holds `head` messages. */
  create(
    conversationId: string,
    members: Record<string, number>,
    options: { readonly head?: number; readonly cellId?: string } = {},
  ): void {
    this.logs.set(conversationId, { head: options.head ?? 0, joinedAfterSeq: new Map(Object.entries(members)) });
    this.directory.conversations.set(conversationId, { kind: "conversation", id: conversationId, cellId: options.cellId ?? "a", epoch: 1 });
  }

  /** Commits `count` messages; returns them (for live delivery, in order). */
  append(conversationId: string, count = 1): Message[] {
    const log = this.log(conversationId);
    const appended: Message[] = [];
    for (let index = 0; index < count; index++) appended.push(logMessage(conversationId, ++log.head));
    return appended;
  }

  /** `userId` joins at the current head; returns the join point. */
  join(conversationId: string, userId: string): number {
    const log = this.log(conversationId);
    log.joinedAfterSeq.set(userId, log.head);
    return log.head;
  }

  remove(conversationId: string, userId: string): void {
    this.log(conversationId).joinedAfterSeq.delete(userId);
  }

  head(conversationId: string): number {
    return this.log(conversationId).head;
  }

  /** Reads of `conversationId` (of every conversation when absent) wait from now until the release is called. */
  hold(conversationId = "*"): () => void {
    const gate = deferred<void>();
    this.holds.set(conversationId, gate);
    return () => {
      if (this.holds.get(conversationId) === gate) this.holds.delete(conversationId);
      gate.resolve();
    };
  }

  /** Reads of `conversationId` read their page at once, and answer only once the release is called. */
  holdReplies(conversationId: string): () => void {
    const gate = deferred<void>();
    this.replyHolds.set(conversationId, gate);
    return () => {
      if (this.replyHolds.get(conversationId) === gate) this.replyHolds.delete(conversationId);
      gate.resolve();
    };
  }

  /** Resolves once `count` pages have been read from the logs, their replies sent or held. */
  pagesReadReach(count: number): Promise<void> {
    return this.waiters.until(() => this.pagesRead >= count, `${count} pages read`);
  }

  /** Resolves once `count` reads are held or running at the same time. */
  readsWaiting(count: number): Promise<void> {
    return this.waiters.until(() => this.readsInFlight >= count, `${count} conversation reads in flight`);
  }

  readonly answer = async (_cellId: string, request: CellRequest): Promise<CellReply> => {
    if (request.type !== "cell.messagesAfter") throw new Error(`FakeConversationLogs cannot answer ${request.type}`);
    this.readsInFlight++;
    this.readsInFlightMax = Math.max(this.readsInFlightMax, this.readsInFlight);
    this.waiters.notify();
    try {
      await this.holds.get("*")?.promise;
      await this.holds.get(request.conversationId)?.promise;
      const log = this.logs.get(request.conversationId);
      const joinedAfterSeq = log?.joinedAfterSeq.get(request.userId);
      if (log === undefined || joinedAfterSeq === undefined)
        return { type: "cell.error", code: "not_a_member", message: "not a member of this conversation" };
      const afterSeq = request.afterSeq ?? joinedAfterSeq;
      const messages: Message[] = [];
      for (let seq = afterSeq + 1; seq <= log.head && messages.length < request.limit; seq++)
        messages.push(logMessage(request.conversationId, seq));
      const headSeq = log.head;
      this.pagesRead++;
      this.waiters.notify();
      await this.replyHolds.get(request.conversationId)?.promise;
      return { type: "cell.messages", conversationId: request.conversationId, afterSeq, messages, headSeq };
    } finally {
      this.readsInFlight--;
    }
  };

  private log(conversationId: string): { head: number; readonly joinedAfterSeq: Map<string, number> } {
    const log = this.logs.get(conversationId);
    if (log === undefined) throw new Error(`no fake log ${conversationId}`);
    return log;
  }
}

/** Monotonic and wall time that move only when a test says so. */
export class FakeClock {
  monotonicMs = 1000;
  wallMs = 1_700_000_000_000;
  readonly monotonicNowMs = (): number => this.monotonicMs;
  readonly wallNowMs = (): number => this.wallMs;

  advance(durationMs: number): void {
    this.monotonicMs += durationMs;
    this.wallMs += durationMs;
  }
}

/**
 * Presence as one edge sees it, without NATS: the real PresenceTable, with the claim announcements this
 * edge would publish recorded in `claims`, and other edges' messages fed in with `receive`.
 * `statesGate`, when set, holds states() (an edge still warming up).
 */
export class FakePresence implements PresenceSource {
  readonly table: PresenceTable;
  readonly claims: { readonly userId: string; readonly status: "online" | "offline" }[] = [];
  statesGate: Promise<void> | undefined;
  private readonly listeners = new Set<(change: PresenceChange) => void>();

  constructor(readonly clock: FakeClock) {
    this.table = new PresenceTable(
      { localEdgeInstanceId: "edge-under-test", remoteClaimsMax: 1000, offlineUsersRememberedMax: 1000 },
      clock,
    );
  }

  sessionOpened(userId: string): void {
    const outcome = this.table.localSessionOpened(userId);
    if (outcome.claimChanged) this.claims.push({ userId, status: "online" });
    this.emit(outcome.changes);
  }

  sessionClosed(userId: string): void {
    const outcome = this.table.localSessionClosed(userId);
    if (outcome.claimChanged) this.claims.push({ userId, status: "offline" });
    this.emit(outcome.changes);
  }

  async states(userIds: readonly string[]): Promise<PresenceState[]> {
    if (this.statesGate !== undefined) await this.statesGate;
    return userIds.map((userId) => this.table.stateOf(userId));
  }

  onChange(listener: (change: PresenceChange) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** A message from another edge on the presence subject. */
  receive(message: PresenceMessage): void {
    this.emit(this.table.apply(message));
  }

  /** The hub's periodic expiry check. */
  expire(): void {
    this.emit(this.table.expire());
  }

  private emit(changes: readonly PresenceChange[]): void {
    for (const change of changes) for (const listener of this.listeners) listener(change);
  }
}

export type RecordedLine = { readonly level: "debug" | "info" | "warn" | "error"; readonly message: string; readonly fields?: LogFields };

/** Keeps every line; a child writes into the same lines, with its bound fields (a traceId) merged into each. */
export class RecordingLogger implements ServiceLogger {
  constructor(
    readonly lines: RecordedLine[] = [],
    private readonly bound: LogFields | undefined = undefined,
  ) {}
  private record(level: RecordedLine["level"], message: string, fields: LogFields | undefined): void {
    const merged = this.bound === undefined ? fields : { ...this.bound, ...fields };
    this.lines.push(merged === undefined ? { level, message } : { level, message, fields: merged });
  }
  readonly debug = (message: string, fields?: LogFields): void => this.record("debug", message, fields);
  readonly info = (message: string, fields?: LogFields): void => this.record("info", message, fields);
  readonly warn = (message: string, fields?: LogFields): void => this.record("warn", message, fields);
  readonly error = (message: string, fields?: LogFields): void => this.record("error", message, fields);
  readonly child = (fields: LogFields): RecordingLogger => new RecordingLogger(this.lines, { ...this.bound, ...fields });
}

export const defaultTestLimits: EdgeLimits = {
  authTimeoutMs: 5000,
  heartbeatIntervalMs: 25_000,
  sessionsMax: 100,
  sessionsPerUserMax: 4,
  requestsInFlightPerSessionMax: 8,
  requestsInFlightMax: 1000,
  overloadedRetryAfterMs: 250,
  sendBufferBytesMax: 64 * 1024,
  heldEventsPerSessionMax: 100,
  heldBytesPerSessionMax: 1024 * 1024,
  conversationsPerSessionMax: 100,
  conversationReadsPerSessionMax: 4,
  typingIntervalMs: 1000,
  typingConversationsPerSessionMax: 4,
  sendOrderHoldMs: 5000,
  // Far above what the tests of other behaviour send; the rate limits' own tests set theirs.
  rateLimits: {
    perSession: {
      send: { perSecond: 1000, burst: 1000 },
      typing: { perSecond: 1000, burst: 1000 },
      history: { perSecond: 1000, burst: 1000 },
      conversationChange: { perSecond: 1000, burst: 1000 },
      // The edge's default: the refresh tests pace themselves by it.
      refresh: { perSecond: 1, burst: 1 },
    },
    perUser: {
      send: { perSecond: 1000, burst: 1000 },
      typing: { perSecond: 1000, burst: 1000 },
      history: { perSecond: 1000, burst: 1000 },
      conversationChange: { perSecond: 1000, burst: 1000 },
      refresh: { perSecond: 1000, burst: 1000 },
    },
    fanOutPerUser: { perSecond: 1_000_000, burst: 1_000_000 },
  },
};

export const typingExpiresInMsForTests = 5000;

export type FakeEdge = {
  readonly core: EdgeCore;
  readonly verifier: FakeVerifier;
  readonly directory: FakeDirectory;
  readonly cache: DirectoryCache;
  readonly router: FakeCellRouting;
  /** Answers cell.messagesAfter unless a test sets its own answer on `router`. */
  readonly logs: FakeConversationLogs;
  /** The edge-wide bound on conversation reads in flight. */
  readonly conversationReads: ConcurrencyLimiter;
  readonly handler: RequestHandler;
  readonly deliveries: FakeDeliveries;
  readonly members: ConversationMembers;
  readonly presence: FakePresence;
  readonly clock: FakeClock;
  readonly logger: RecordingLogger;
  readonly transports: FakeTransport[];
  /** Every wait of the edge's Router for a migrating key, in ms. */
  readonly homeWaitsMs: number[];
  /** A new socket with its session (undefined when the core refused it). */
  connect(): { transport: FakeTransport; session: Session | undefined };
  /** A socket that sent a hello with a valid token for `userId` and got its welcome. */
  authenticated(
    userId: string,
    hello?: Record<string, unknown>,
  ): Promise<{ transport: FakeTransport; session: Session; welcome: Record<string, unknown> }>;
};

/** Requests a fake edge sends for one frame while its key moves (see Router). */
export const homeAttemptsMaxForTests = 8;

/** Each request's deadline in fake edges (monotonic ms of the FakeClock). */
export const requestDeadlineMsForTests = 8000;

/** Member lists stay cached this long in fake edges (monotonic ms of the FakeClock). */
export const memberCacheTtlMsForTests = 10_000;

export type FakeEdgeOptions = {
  readonly conversationReadsInFlightMax?: number;
  /**
   * The catch-ups after a ring change or a NATS reconnect: their window (0 by default: all start in the
   * turn that asks, as the tests of what a catch-up reads expect), their bound, and the clock of their
   * moments (real timers by default).
   */
  readonly catchUp?: { readonly spreadMs: number; readonly readsInFlightMax: number; readonly clock?: CatchUpClock };
  /** Whose presence sessions may watch; everyone by default. */
  readonly presenceAccess?: PresenceAccess;
  /** What the sessions count; nothing by default. */
  readonly metrics?: SessionMetrics;
  /** Told of each lookup in the directory cache; nothing by default. */
  readonly directoryCacheLookups?: (result: DirectoryCacheLookup) => void;
  /** The trace contexts of requests with tracing off; a random prefix by default. */
  readonly traceIds?: TraceIds;
};

export function fakeEdge(limits: Partial<EdgeLimits> = {}, options: FakeEdgeOptions = {}): FakeEdge {
  const verifier = new FakeVerifier();
  const directory = new FakeDirectory();
  const cache = createEdgeDirectoryCache(1000, 60_000, () => 0, options.directoryCacheLookups);
  const router = new FakeCellRouting();
  const logs = new FakeConversationLogs(directory);
  router.answers.set("cell.messagesAfter", logs.answer);
  const conversationReads = new ConcurrencyLimiter(options.conversationReadsInFlightMax ?? 64);
  const deliveries = new FakeDeliveries();
  const clock = new FakeClock();
  const homeWaitsMs: number[] = [];
  // Waits for a migrating key are recorded, and last one turn of the event loop: the fake clock does not
  // move, so attemptsMax is what bounds them.
  const handler = new RequestHandler(
    directory,
    cache,
    router,
    {
      options: { ...routerDefaults, attemptsMax: homeAttemptsMaxForTests },
      requestDeadlineMs: requestDeadlineMsForTests,
      dependencies: {
        monotonicNowMs: clock.monotonicNowMs,
        random: () => 1,
        sleep: (ms) => {
          homeWaitsMs.push(ms);
          return new Promise((resolve) => setImmediate(resolve));
        },
      },
    },
    devDirectConversationKey,
  );
  const presence = new FakePresence(clock);
  const members = new ConversationMembers(
    { conversationsMax: 100, ttlMs: memberCacheTtlMsForTests },
    { requestAtHome: (request) => handler.requestAtHome(request), nowMs: clock.monotonicNowMs },
  );
  const typing = new TypingRelay(members, deliveries, typingExpiresInMsForTests);
  const logger = new RecordingLogger();
  const catchUps = new CatchUpPacer<Session>(
    { spreadMs: options.catchUp?.spreadMs ?? 0, readsInFlightMax: options.catchUp?.readsInFlightMax ?? 64 },
    options.catchUp?.clock ?? {
      monotonicNowMs: clock.monotonicNowMs,
      random: Math.random,
      setTimer: (callback, delayMs) => {
        const timer = setTimeout(callback, delayMs);
        return () => clearTimeout(timer);
      },
    },
    logger.warn,
  );
  const core = new EdgeCore(
    { ...defaultTestLimits, ...limits },
    verifier,
    handler,
    deliveries,
    logger,
    { typing, presence, presenceAccess: options.presenceAccess ?? new EveryoneVisible(), monotonicNowMs: clock.monotonicNowMs },
    conversationReads,
    { wallNowMs: clock.wallNowMs, revocations: new RevocationList({ revocationsMax: 100, retentionMs: 3_600_000 }) },
    catchUps,
    options.metrics,
    options.traceIds,
  );
  const transports: FakeTransport[] = [];
  const connect = (): { transport: FakeTransport; session: Session | undefined } => {
    const transport = new FakeTransport();
    transports.push(transport);
    const session = core.openSession(transport);
    transport.attach(session);
    return { transport, session };
  };
  return {
    core,
    verifier,
    directory,
    cache,
    router,
    logs,
    conversationReads,
    handler,
    deliveries,
    members,
    presence,
    clock,
    logger,
    transports,
    homeWaitsMs,
    connect,
    authenticated: async (userId, hello = {}) => {
      const { transport, session } = connect();
      if (session === undefined) throw new Error(`the core refused a session; closed with ${String(transport.closeCode)}`);
      transport.receiveJson({ type: "hello", protocolVersion, token: `valid:${userId}`, ...hello });
      const welcome = await transport.frame((frame) => frame["type"] === "welcome");
      return { transport, session, welcome };
    },
  };
}

/** Frames of one type, in order. */
export function framesOfType(transport: FakeTransport, type: ServerFrame["type"]): Record<string, unknown>[] {
  return transport.frames.filter((frame) => frame["type"] === type);
}
