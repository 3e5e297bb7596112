// What the chat benchmark's load processes need of a system under test: one user's connection, able to
// create or join a conversation, send with an acknowledgement and receive every message of its
// conversations (its own included). Cellwire implements it over the SDK (cellwire-connection.ts), the
// Socket.IO peer over socket.io-client (socketio-peer/socketio-connection.ts), so one workload drives both.

/** Receives each message that reaches the connection: its conversation and the body as sent. */
export type MessageListener = (conversationId: string, body: string) => void;
/** Called each time an open connection drops on its own (not on close()); it then reconnects by itself. */
export type ConnectionLostListener = () => void;

export interface ChatConnection {
  /** Resolves once the connection can send and receive (Cellwire: its first `synced`). */
  connect(): Promise<void>;
  /**
   * Creates a conversation of `memberUserIds` (this connection's user among them, first) and resolves
   * with its id. `index` is the workload's number for it, unique in the run (a peer without server-side
   * conversations derives the id from it).
   */
  createConversation(index: number, memberUserIds: readonly string[]): Promise<string>;
  /** Makes sure messages of the conversation reach this connection (Socket.IO: joins its room). */
  joinConversation(conversationId: string): Promise<void>;
  /** Resolves when the server acknowledged the message (Cellwire: after its commit); rejects on failure. */
  send(conversationId: string, body: string): Promise<void>;
  onMessage(listener: MessageListener): void;
  onConnectionLost(listener: ConnectionLostListener): void;
  close(): Promise<void>;
}

/** How a load process opens connections to one system: user ids and the server (edge or node) to use. */
export type ChatConnectionFactory = (userId: string, serverUrls: readonly string[]) => ChatConnection;
