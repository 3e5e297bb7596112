// A run of real clients whose every send, ack and received event is recorded for the history checker:
// the shared part of the chaos, rolling-restart and NATS-cluster tests.
import { WebSocket } from "ws";
import { CellwireClient, CellwireClientError } from "@cellwire/client";
import { defaultDevKeyDirectory, signDevToken } from "@cellwire/edge/dev-keys";
import { checkHistory, dumpCellDatabases, type CheckReport, type HistoryRecord } from "@cellwire/loadtest";
import type { SequencedEvent } from "@cellwire/protocol";

export type RecordedDevice = {
  readonly userId: string;
  readonly deviceId: string;
  readonly client: CellwireClient;
  /** The events this device's client emitted, in order (its sessions of this open only). */
  readonly events: SequencedEvent[];
  lastSeq(): number;
  untilSeq(seq: number, deadlineMs: number): Promise<void>;
};

export type SendOutcome = { readonly retries: number };

export class RecordedRun {
  readonly record: HistoryRecord = { sends: [], acks: [], deliveries: [], database: { messages: [], members: [], mailboxes: [] }, expectComplete: true };
  readonly devices: RecordedDevice[] = [];
  private readonly membersOf = new Map<string, readonly string[]>();
  /** Sends that failed with a retryable error and were sent again with the same clientMessageId. */
  retries = 0;

  constructor(private readonly sendAttemptsMax = 5) {}

  /** Connects a device (to the first URL, failing over to the others) and waits for its first `synced`. */
  async openDevice(userId: string, deviceId: string, urls: readonly string[], resumeAfterSeq?: number): Promise<RecordedDevice> {
    const client = new CellwireClient({
      url: urls,
      deviceId,
      WebSocket,
      tokenProvider: () => signDevToken(defaultDevKeyDirectory, userId, { deviceId }),
      requestTimeoutMs: 30_000,
      ...(resumeAfterSeq === undefined ? {} : { resumeAfterSeq }),
    });
    let delivered = this.record.deliveries.find((entry) => entry.userId === userId && entry.deviceId === deviceId);
    if (delivered === undefined) {
      delivered = { userId, deviceId, events: [], ...(resumeAfterSeq === undefined ? {} : { startAfterSeq: resumeAfterSeq }) };
      this.record.deliveries.push(delivered);
    }
    const sink = delivered;
    let lastSeq = resumeAfterSeq ?? 0;
    const events: SequencedEvent[] = [];
    const waiters = new Set<() => void>();
    const wake = (): void => {
      for (const waiter of [...waiters]) waiter();
    };
    client.on("event", ({ seq, event }) => {
      lastSeq = seq;
      events.push({ seq, event });
      if (event.kind === "message") sink.events.push({ seq, message: event.message });
      wake();
    });
    client.on("synced", ({ seq }) => {
      lastSeq = Math.max(lastSeq, seq);
      wake();
    });
    const synced = client.whenSynced();
    await client.connect();
    await synced;
    const device: RecordedDevice = {
      userId,
      deviceId,
      client,
      events,
      lastSeq: () => lastSeq,
      untilSeq: (seq, deadlineMs) =>
        new Promise((resolve, reject) => {
          const check = (): void => {
            if (lastSeq < seq) return;
            clearTimeout(timer);
            waiters.delete(check);
            resolve();
          };
          const timer = setTimeout(() => {
            waiters.delete(check);
            reject(new Error(`${userId}/${deviceId} reached mailbox seq ${lastSeq}, not ${seq}`));
          }, deadlineMs);
          waiters.add(check);
          check();
        }),
    };
    this.devices.push(device);
    return device;
  }

  /** Records a conversation's members, to know how long each member's mailbox must grow. */
  conversation(conversationId: string, memberUserIds: readonly string[]): void {
    this.membersOf.set(conversationId, memberUserIds);
  }

  conversationsOf(userId: string): string[] {
    return [...this.membersOf].filter(([, members]) => members.includes(userId)).map(([id]) => id);
  }

  /** Sends and records; returns the ack's messageId and seq. A retryable failure is sent again with the same clientMessageId, as an app would. */
  async send(from: RecordedDevice, conversationId: string, body: string, clientMessageId: string): Promise<{ messageId: string; seq: number }> {
    this.record.sends.push({ senderUserId: from.userId, senderDeviceId: from.deviceId, conversationId, clientMessageId, body });
    for (let attempt = 1; ; attempt++) {
      try {
        const ack = await from.client.send(conversationId, body, { clientMessageId });
        this.record.acks.push({ senderUserId: from.userId, conversationId, clientMessageId, messageId: ack.messageId, seq: ack.seq });
        return { messageId: ack.messageId, seq: ack.seq };
      } catch (error) {
        if (!(error instanceof CellwireClientError) || !error.retryable || attempt >= this.sendAttemptsMax) {
          throw new Error(`gave up on ${clientMessageId}: ${String(error)}`, { cause: error });
        }
        this.retries++;
      }
    }
  }

  /** One event per acked message of each of the user's conversations. */
  mailboxLength(userId: string): number {
    return this.record.acks.filter((ack) => this.membersOf.get(ack.conversationId)?.includes(userId) === true).length;
  }

  /** Waits until every open device holds its user's whole mailbox, then closes every device. */
  async settle(deadlineMs: number): Promise<void> {
    const open = this.devices.filter((device) => device.client.state !== "closed");
    await Promise.all(open.map((device) => device.untilSeq(this.mailboxLength(device.userId), deadlineMs)));
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
