// A run of real clients whose every send, ack, received message and mailbox event is recorded for the
// history checker: the shared part of the chaos, rolling-restart, migration, Redis-outage and resume tests.
//
// One record per (user, device) across all its opens (loadtest/README.md, "The record"): the messages it
// received as compact deliveries ({conversationId, seq, messageId}), its mailbox events, and where its
// first open started (resumeAfterSeq). A device opened again with a resumeAfterSeq also resumes every
// conversation from where its previous open stopped (the SDK's positions()), as an app that stored them
// would, so its record stays one gapless stream per conversation.
import { WebSocket } from "ws";
import { CellwireClient, CellwireClientError, type ReceivedEvent } from "@cellwire/client";
import { defaultDevKeyDirectory, signDevToken } from "@cellwire/edge/dev-keys";
import { checkHistory, dumpCellDatabases, type CheckReport, type DeviceDeliveries, type HistoryRecord } from "@cellwire/loadtest";
import type { Message } from "@cellwire/protocol";

export type RecordedDevice = {
  readonly userId: string;
  readonly deviceId: string;
  readonly client: CellwireClient;
  /** The mailbox events this open's client emitted, in order (its sessions of this open only). */
  readonly events: ReceivedEvent[];
  /** The messages this open's client emitted, in arrival order: each conversation in seq order. */
  readonly messages: Message[];
  /** The last mailbox seq the device holds (0 before any). */
  lastSeq(): number;
  /**
   * The seq of the last message of the conversation the device holds: from a message, a joined event's
   * join point or the cursor it resumed from; undefined for a conversation it does not follow.
   */
  cursorOf(conversationId: string): number | undefined;
  /** Resolves once the device holds mailbox seq `seq`. */
  untilSeq(seq: number, deadlineMs: number): Promise<void>;
  /** Resolves once the device holds the conversation's messages up to `seq`. */
  untilMessage(conversationId: string, seq: number, deadlineMs: number): Promise<void>;
  /**
   * Resolves once the device holds every acked message of each conversation it follows, and at least
   * mailboxLength(userId) mailbox events (its recorded conversations' joined events).
   */
  untilDelivered(deadlineMs: number): Promise<void>;
};

export type SendOutcome = { readonly retries: number };

export class RecordedRun {
  readonly record: HistoryRecord = {
    sends: [],
    acks: [],
    deliveries: [],
    database: { messages: [], members: [], mailboxes: [] },
    expectComplete: true,
  };
  readonly devices: RecordedDevice[] = [];
  /**
   * Gaps the SDK saw in a session's mailbox or conversation and repaired by reconnecting (its
   * mailbox_gap and conversation_gap errors): the checker cannot see them, since the SDK emits nothing
   * past a gap, yet each is an edge breaking its promise.
   */
  readonly sequenceGaps: string[] = [];
  private readonly membersOf = new Map<string, readonly string[]>();
  /** The highest acked seq of each conversation: what a device following it must reach to be delivered. */
  private readonly ackedHeads = new Map<string, number>();
  /** Re-checks every waiting device: an ack can complete what untilDelivered waits for. */
  private readonly wakes = new Set<() => void>();
  /** Sends that failed with a retryable error and were sent again with the same clientMessageId. */
  retries = 0;

  constructor(private readonly sendAttemptsMax = 5) {}

  /**
   * Connects a device (to the first URL, failing over to the others) and waits for its first `synced`.
   * Without resumeAfterSeq the session starts live. With it, a device opened before in this run also
   * resumes each conversation after the last message its previous open held; pass its lastSeq() to
   * continue it without a gap.
   */
  async openDevice(userId: string, deviceId: string, urls: readonly string[], resumeAfterSeq?: number): Promise<RecordedDevice> {
    const earlier = this.devices.filter((device) => device.userId === userId && device.deviceId === deviceId).at(-1);
    const resumeConversations = resumeAfterSeq === undefined ? undefined : earlier?.client.positions().conversations;
    const client = new CellwireClient({
      url: urls,
      deviceId,
      WebSocket,
      tokenProvider: () => signDevToken(defaultDevKeyDirectory, userId, { deviceId }),
      requestTimeoutMs: 30_000,
      ...(resumeAfterSeq === undefined ? {} : { resumeAfterSeq }),
      ...(resumeConversations === undefined ? {} : { resumeConversations }),
    });
    const sink = this.deliveriesOf(userId, deviceId, resumeAfterSeq);
    let lastSeq = resumeAfterSeq ?? 0;
    const cursors = new Map<string, number>(Object.entries(resumeConversations ?? {}));
    const events: ReceivedEvent[] = [];
    const messages: Message[] = [];
    const waiters = new Set<() => void>();
    const wake = (): void => {
      for (const waiter of [...waiters]) waiter();
    };
    this.wakes.add(wake);
    client.on("event", (received) => {
      lastSeq = received.seq;
      events.push(received);
      sink.events.push(received);
      // As the SDK does: a joined event starts the conversation's cursor at the join point unless it has one.
      if (received.event.kind === "joined" && !cursors.has(received.event.conversationId))
        cursors.set(received.event.conversationId, received.event.afterSeq);
      wake();
    });
    client.on("message", (message) => {
      messages.push(message);
      sink.messages.push({ conversationId: message.conversationId, seq: message.seq, messageId: message.messageId });
      cursors.set(message.conversationId, message.seq);
      wake();
    });
    client.on("synced", ({ seq }) => {
      lastSeq = Math.max(lastSeq, seq);
      wake();
    });
    client.on("error", (error) => {
      if (error.code === "mailbox_gap" || error.code === "conversation_gap")
        this.sequenceGaps.push(`${userId}/${deviceId}: ${error.message}`);
    });
    client.on("state", ({ state }) => {
      if (state === "closed") this.wakes.delete(wake);
    });
    const until = (holds: () => boolean, lacking: () => string, deadlineMs: number): Promise<void> =>
      new Promise((resolve, reject) => {
        const check = (): void => {
          if (!holds()) return;
          clearTimeout(timer);
          waiters.delete(check);
          resolve();
        };
        const timer = setTimeout(() => {
          waiters.delete(check);
          reject(new Error(`${userId}/${deviceId} waited ${deadlineMs} ms: ${lacking()}`));
        }, deadlineMs);
        waiters.add(check);
        check();
      });
    const undelivered = (): string[] => {
      const lagging: string[] = [];
      for (const [conversationId, held] of cursors) {
        const head = this.ackedHeads.get(conversationId) ?? 0;
        if (held < head) lagging.push(`conversation ${conversationId} at seq ${held} of ${head}`);
      }
      const joinedEvents = this.mailboxLength(userId);
      if (lastSeq < joinedEvents) lagging.push(`mailbox at seq ${lastSeq} of at least ${joinedEvents}`);
      return lagging;
    };
    const synced = client.whenSynced();
    await client.connect();
    await synced;
    const device: RecordedDevice = {
      userId,
      deviceId,
      client,
      events,
      messages,
      lastSeq: () => lastSeq,
      cursorOf: (conversationId) => cursors.get(conversationId),
      untilSeq: (seq, deadlineMs) =>
        until(
          () => lastSeq >= seq,
          () => `reached mailbox seq ${lastSeq}, not ${seq}`,
          deadlineMs,
        ),
      untilMessage: (conversationId, seq, deadlineMs) =>
        until(
          () => (cursors.get(conversationId) ?? 0) >= seq,
          () => `holds conversation ${conversationId} up to seq ${cursors.get(conversationId) ?? "none"}, not ${seq}`,
          deadlineMs,
        ),
      untilDelivered: (deadlineMs) =>
        until(
          () => undelivered().length === 0,
          () => `not delivered: ${undelivered().join(", ")}`,
          deadlineMs,
        ),
    };
    this.devices.push(device);
    return device;
  }

  /** The record of one device, made at its first open: its resumeAfterSeq then is where the checker holds it from. */
  private deliveriesOf(userId: string, deviceId: string, resumeAfterSeq: number | undefined): DeviceDeliveries {
    const existing = this.record.deliveries.find((entry) => entry.userId === userId && entry.deviceId === deviceId);
    if (existing !== undefined) return existing;
    const created: DeviceDeliveries = {
      userId,
      deviceId,
      messages: [],
      events: [],
      ...(resumeAfterSeq === undefined ? {} : { startAfterSeq: resumeAfterSeq }),
    };
    this.record.deliveries.push(created);
    return created;
  }

  /** Records a conversation's members, to know which joined events each member's mailbox must hold. */
  conversation(conversationId: string, memberUserIds: readonly string[]): void {
    this.membersOf.set(conversationId, memberUserIds);
  }

  conversationsOf(userId: string): string[] {
    return [...this.membersOf].filter(([, members]) => members.includes(userId)).map(([id]) => id);
  }

  /** Sends and records; returns the ack's messageId and seq. A retryable failure is sent again with the same clientMessageId, as an app would. */
  async send(
    from: RecordedDevice,
    conversationId: string,
    body: string,
    clientMessageId: string,
  ): Promise<{ messageId: string; seq: number }> {
    this.record.sends.push({ senderUserId: from.userId, senderDeviceId: from.deviceId, conversationId, clientMessageId, body });
    for (let attempt = 1; ; attempt++) {
      try {
        const ack = await from.client.send(conversationId, body, { clientMessageId });
        this.record.acks.push({ senderUserId: from.userId, conversationId, clientMessageId, messageId: ack.messageId, seq: ack.seq });
        this.ackedHeads.set(conversationId, Math.max(this.ackedHeads.get(conversationId) ?? 0, ack.seq));
        for (const wake of [...this.wakes]) wake();
        return { messageId: ack.messageId, seq: ack.seq };
      } catch (error) {
        if (!(error instanceof CellwireClientError) || !error.retryable || attempt >= this.sendAttemptsMax) {
          throw new Error(`gave up on ${clientMessageId}: ${String(error)}`, { cause: error });
        }
        this.retries++;
      }
    }
  }

  /**
   * The mailbox events the user is known to have: one joined event per recorded conversation of theirs.
   * A lower bound: receipts, and conversations the test did not record, add more.
   */
  mailboxLength(userId: string): number {
    return this.conversationsOf(userId).length;
  }

  /** Waits until every open device holds everything acked in the conversations it follows, then closes every device. */
  async settle(deadlineMs: number): Promise<void> {
    const open = this.devices.filter((device) => device.client.state !== "closed");
    await Promise.all(open.map((device) => device.untilDelivered(deadlineMs)));
    this.closeAll();
  }

  closeAll(): void {
    for (const device of this.devices) device.client.close();
  }

  async check(postgresAdminUrl: string, namespace: string, cellIds: readonly string[]): Promise<CheckReport> {
    this.record.database = await dumpCellDatabases({ postgresAdminUrl, namespace, cellIds: [...cellIds] });
    return checkHistory(this.record);
  }
}
