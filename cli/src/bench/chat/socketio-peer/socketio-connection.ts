// One user's connection to the chat benchmark's Socket.IO peer (server.ts) over socket.io-client, as the
// ChatConnection the load processes drive. WebSocket only, as a production client that skips the
// long-polling handshake would be, and reconnecting with socket.io-client's own backoff.
//
// The peer has no server-side conversations: a conversation is a room, named `c-<index>`, which every
// member joins. Rooms belong to a server-side socket, so after a reconnection this connection joins its
// conversations again; what was sent to them in between is gone (nothing is persisted, by design).
import { io, type Socket } from "socket.io-client";
import type { ChatConnection, ChatConnectionFactory, ConnectionLostListener, MessageListener } from "../chat-connection.ts";

/** How long connect() waits for the first connection, through socket.io-client's own retries. */
const connectDeadlineMs = 10_000;
/** How long a join or a send waits for the server's acknowledgement. */
const acknowledgementTimeoutMs = 10_000;

type SendPayload = { readonly conversationId: string; readonly body: string };
type Acknowledge = (response: unknown) => void;
type ServerToClientEvents = { message: (payload: unknown) => void };
type ClientToServerEvents = {
  join: (conversationId: string, acknowledge: Acknowledge) => void;
  send: (payload: SendPayload, acknowledge: Acknowledge) => void;
};

export type SocketIoConnectionErrorCode =
  /** No connection within connectDeadlineMs. */
  | "connect-timeout"
  /** No acknowledgement within acknowledgementTimeoutMs, or the socket disconnected while waiting. */
  | "acknowledgement-timeout"
  /** The server acknowledged with `{ ok: false }` (an invalid conversation id or body). */
  | "rejected";

export class SocketIoConnectionError extends Error {
  override readonly name = "SocketIoConnectionError";
  constructor(
    readonly code: SocketIoConnectionErrorCode,
    message: string,
    options?: ErrorOptions,
  ) {
    super(message, options);
  }
}

/** The server's acknowledgement: `{ ok: true }`, or anything else, which is a refusal. */
function isAccepted(response: unknown): boolean {
  return typeof response === "object" && response !== null && "ok" in response && response.ok === true;
}

function describeResponse(response: unknown): string {
  if (typeof response === "object" && response !== null && "error" in response && typeof response.error === "string") return response.error;
  return "no reason given";
}

class SocketIoConnection implements ChatConnection {
  private readonly socket: Socket<ServerToClientEvents, ClientToServerEvents>;
  private readonly listeners: MessageListener[] = [];
  /** Joined again after each reconnection: the server-side socket, and its rooms, are new each time. */
  private readonly conversationIds = new Set<string>();
  private connectedOnce = false;

  constructor(
    private readonly userId: string,
    private readonly serverUrl: string,
  ) {
    this.socket = io(serverUrl, {
      transports: ["websocket"],
      reconnection: true,
      // connect() opens it, so that a connection is not counted before the load process asks for it.
      autoConnect: false,
      // Without it the first socket to a URL goes into socket.io-client's global cache of managers, which
      // holds it, and through its listeners this connection, for the life of the load process.
      forceNew: true,
    });
    this.socket.on("message", (payload) => this.deliver(payload));
    this.socket.on("connect", () => this.onConnect());
  }

  connect(): Promise<void> {
    if (this.socket.connected) return Promise.resolve();
    return new Promise<void>((resolve, reject) => {
      let lastError: Error | undefined;
      const onConnect = (): void => {
        clearTimeout(timer);
        this.socket.off("connect_error", onConnectError);
        resolve();
      };
      // socket.io-client retries the first connection as it does a reconnection: keep the latest reason.
      const onConnectError = (error: Error): void => {
        lastError = error;
      };
      const timer = setTimeout(() => {
        this.socket.off("connect", onConnect);
        this.socket.off("connect_error", onConnectError);
        this.socket.disconnect();
        const why = lastError === undefined ? "" : ` (last error: ${lastError.message})`;
        reject(
          new SocketIoConnectionError(
            "connect-timeout",
            `${this.userId} could not connect to ${this.serverUrl} within ${connectDeadlineMs} ms${why}`,
            {
              cause: lastError,
            },
          ),
        );
      }, connectDeadlineMs);
      this.socket.once("connect", onConnect);
      this.socket.on("connect_error", onConnectError);
      this.socket.connect();
    });
  }

  // The member ids go unused: the peer has no conversations to create, and each member joins the room
  // itself with joinConversation.
  async createConversation(index: number): Promise<string> {
    const conversationId = `c-${index}`;
    await this.joinConversation(conversationId);
    return conversationId;
  }

  joinConversation(conversationId: string): Promise<void> {
    this.conversationIds.add(conversationId);
    return new Promise<void>((resolve, reject) => {
      this.socket.timeout(acknowledgementTimeoutMs).emit("join", conversationId, (error: Error | null, response: unknown) => {
        if (error !== null)
          reject(
            new SocketIoConnectionError("acknowledgement-timeout", `join of ${conversationId} by ${this.userId}: ${error.message}`, {
              cause: error,
            }),
          );
        else if (isAccepted(response)) resolve();
        else
          reject(
            new SocketIoConnectionError(
              "rejected",
              `join of ${conversationId} by ${this.userId} was refused: ${describeResponse(response)}`,
            ),
          );
      });
    });
  }

  // The hot path: one payload object, one acknowledgement closure and the promise; strings for errors only.
  send(conversationId: string, body: string): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      // socket.io-client types the first argument as Error, but it is null when the acknowledgement came.
      this.socket.timeout(acknowledgementTimeoutMs).emit("send", { conversationId, body }, (error: Error | null, response: unknown) => {
        if (error !== null)
          reject(
            new SocketIoConnectionError("acknowledgement-timeout", `send to ${conversationId} by ${this.userId}: ${error.message}`, {
              cause: error,
            }),
          );
        else if (isAccepted(response)) resolve();
        else
          reject(
            new SocketIoConnectionError(
              "rejected",
              `send to ${conversationId} by ${this.userId} was refused: ${describeResponse(response)}`,
            ),
          );
      });
    });
  }

  onMessage(listener: MessageListener): void {
    this.listeners.push(listener);
  }

  onConnectionLost(listener: ConnectionLostListener): void {
    this.socket.on("disconnect", (reason) => {
      // "io client disconnect" is our own close().
      if (reason !== "io client disconnect") listener();
    });
  }

  close(): Promise<void> {
    this.socket.disconnect();
    return Promise.resolve();
  }

  private deliver(payload: unknown): void {
    // Only the peer's server sends `message`, always in this shape; anything else is dropped, which a
    // workload counts as a missing message, rather than thrown inside socket.io-client's event loop.
    if (typeof payload !== "object" || payload === null || !("conversationId" in payload) || !("body" in payload)) return;
    const { conversationId, body } = payload;
    if (typeof conversationId !== "string" || typeof body !== "string") return;
    for (const listener of this.listeners) listener(conversationId, body);
  }

  private onConnect(): void {
    if (!this.connectedOnce) {
      this.connectedOnce = true;
      return;
    }
    for (const conversationId of this.conversationIds) {
      // Nobody waits on these: a failed one shows as messages this user misses, which the workload counts.
      this.socket.timeout(acknowledgementTimeoutMs).emit("join", conversationId, () => {});
    }
  }
}

/** Connects `userId` to serverUrls[0]: the load process picks each user's node by the order of the list. */
export function socketIoConnection(userId: string, serverUrls: readonly string[]): ChatConnection {
  const serverUrl = serverUrls[0];
  if (serverUrl === undefined) throw new RangeError(`no server URL for ${userId}`);
  return new SocketIoConnection(userId, serverUrl);
}

// Keeps the factory's signature checked against the interface, where both are defined.
socketIoConnection satisfies ChatConnectionFactory;
