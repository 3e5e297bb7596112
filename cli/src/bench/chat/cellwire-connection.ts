// One user's connection to Cellwire over the SDK (@cellwire/client), as the ChatConnection the chat
// benchmark's load processes drive: the edge the workload picked first, the other edges to fail over to,
// a dev token signed locally, and the whole mailbox from seq 0 (a fresh user's is empty), so that the
// history checker knows where each device started (each conversation from its joined event's join point).
//
// An observer sees each send, ack, message and mailbox event as they happen; history-recording.ts writes them down
// for the checker. The hot path allocates nothing for an absent observer.
import { WebSocket } from "ws";
import { CellwireClient, type Ack, type ReceivedEvent } from "@cellwire/client";
import { defaultDevKeyDirectory, signDevToken } from "@cellwire/edge/dev-keys";
import type { Message } from "@cellwire/protocol";
import type { ChatConnection, ChatConnectionFactory, ConnectionLostListener, MessageListener } from "./chat-connection.ts";

/** A send not acked within this time fails with the SDK's "timeout" (the SDK's default). */
const requestTimeoutMs = 10_000;

export type CellwireObserver = {
  /** Right before the send frame goes out. */
  sending(clientMessageId: string, conversationId: string, body: string): void;
  acknowledged(ack: Ack): void;
  /** Each message, in its conversation's order, as the SDK emits it. */
  received(message: Message): void;
  /** Each mailbox event (joined, receipt), in mailbox order, as the SDK emits it. */
  receivedEvent(event: ReceivedEvent): void;
};

export type CellwireConnectionOptions = {
  /** The same for every user: one device per user. */
  readonly deviceId: string;
  /** The observer of one user's connection, if any. */
  readonly observerOf?: (userId: string) => CellwireObserver | undefined;
  readonly devKeyDirectory?: string;
};

class CellwireConnection implements ChatConnection {
  private readonly client: CellwireClient;
  /** clientMessageIds are `<prefix><counter>`: unique per device, cheaper than a random UUID per send. */
  private readonly clientMessageIdPrefix: string;
  private sendCounter = 0;
  private closing = false;

  constructor(
    private readonly userId: string,
    serverUrls: readonly string[],
    options: CellwireConnectionOptions,
    private readonly observer: CellwireObserver | undefined,
  ) {
    const deviceId = options.deviceId;
    const devKeyDirectory = options.devKeyDirectory ?? defaultDevKeyDirectory;
    this.clientMessageIdPrefix = `${Date.now().toString(36)}-`;
    this.client = new CellwireClient({
      url: serverUrls,
      deviceId,
      WebSocket,
      resumeAfterSeq: 0,
      requestTimeoutMs,
      tokenProvider: () => signDevToken(devKeyDirectory, userId, { deviceId }),
    });
    if (observer !== undefined) {
      this.client.on("message", (message) => observer.received(message));
      this.client.on("event", (event) => observer.receivedEvent(event));
    }
  }

  async connect(): Promise<void> {
    // Asked before connecting, so the first session's `synced` cannot slip past.
    const synced = this.client.whenSynced();
    await this.client.connect();
    await synced;
  }

  /** Two members make a direct conversation (openDirect); more make a group (createGroup). */
  async createConversation(index: number, memberUserIds: readonly string[]): Promise<string> {
    const [creator, ...others] = memberUserIds;
    if (creator !== this.userId)
      throw new RangeError(`conversation ${index} must be created by its first member ${String(creator)}, not ${this.userId}`);
    const [peer] = others;
    if (others.length === 1 && peer !== undefined) return (await this.client.openDirect(peer)).conversationId;
    return (await this.client.createGroup(`bench ${index}`, others)).conversationId;
  }

  // Cellwire delivers a conversation's messages to its members' sessions wherever they are.
  joinConversation(): Promise<void> {
    return Promise.resolve();
  }

  async send(conversationId: string, body: string): Promise<void> {
    const clientMessageId = `${this.clientMessageIdPrefix}${this.sendCounter++}`;
    this.observer?.sending(clientMessageId, conversationId, body);
    const ack = await this.client.send(conversationId, body, { clientMessageId });
    this.observer?.acknowledged(ack);
  }

  onMessage(listener: MessageListener): void {
    this.client.on("message", (message) => listener(message.conversationId, message.body));
  }

  onConnectionLost(listener: ConnectionLostListener): void {
    this.client.on("state", (change) => {
      if (!this.closing && change.previousState === "open" && change.state !== "open") listener();
    });
  }

  close(): Promise<void> {
    this.closing = true;
    this.client.close();
    return Promise.resolve();
  }
}

/** Connections of one load process; each user connects to serverUrls[0] first and fails over to the rest. */
export function cellwireConnectionFactory(options: CellwireConnectionOptions): ChatConnectionFactory {
  return (userId, serverUrls) => {
    if (serverUrls.length === 0) throw new RangeError(`no edge URL for ${userId}`);
    return new CellwireConnection(userId, serverUrls, options, options.observerOf?.(userId));
  };
}
