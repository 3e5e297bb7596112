// Failover with the `ws` package's WebSocket between two small ws servers on loopback ports that share one
// conversation's log and one mailbox, as two edges share the cells behind them; both speak protocol 2
// (docs/decisions/0009). Killing an edge terminates its sockets and closes its port, so reconnects to it
// are refused (error, then close 1006) as after a SIGKILL: what the unit tests' fake edges imitate.
import { once } from "node:events";
import type { AddressInfo } from "node:net";
import {
  decodeClientFrame,
  protocolVersion,
  type ConversationCursor,
  type HelloFrame,
  type Message,
  type SequencedEvent,
  type ServerFrame,
} from "@cellwire/protocol";
import { WebSocket, WebSocketServer } from "ws";
import { afterAll, describe, expect, it } from "vitest";
import { CellwireClient, type CellwireClientEvents, type StateChange } from "./cellwire-client.ts";
import { directConversationId } from "../test/fake-edge.ts";

const deadlineMs = 5000;

/** alice's mailbox (receipts here) and the one conversation's log, shared by both edges. */
const mailbox: SequencedEvent[] = [];
const log: Message[] = [];
const liveSockets = new Set<WebSocket>();
const servers: WebSocketServer[] = [];

type TestEdge = {
  readonly url: string;
  readonly hellos: { readonly resumeAfterSeq: number | undefined; readonly conversations: ConversationCursor[] | undefined }[];
  readonly sentClientMessageIds: string[];
  /** Replies to nothing while true: the edge dies before its acks leave. */
  holdAcks: boolean;
  kill(): Promise<void>;
};

function send(socket: WebSocket, frame: ServerFrame): void {
  socket.send(JSON.stringify(frame));
}

/** Stores a message once per clientMessageId, as the cell does, and sends it to every live session. */
function append(senderUserId: string, clientMessageId: string, body: string): Message {
  const existing = log.find((message) => message.clientMessageId === clientMessageId);
  if (existing !== undefined) return existing;
  const seq = log.length + 1;
  const message: Message = {
    conversationId: directConversationId,
    messageId: `m${seq}`,
    seq,
    senderUserId,
    senderDeviceId: "d",
    clientMessageId,
    body,
    sentAtMs: Date.now(),
  };
  log.push(message);
  for (const socket of liveSockets) send(socket, { type: "message", message });
  return message;
}

function appendReceipt(readSeq: number): void {
  const sequenced: SequencedEvent = {
    seq: mailbox.length + 1,
    event: { kind: "receipt", conversationId: directConversationId, userId: "bob", readSeq, deliveredSeq: readSeq },
  };
  mailbox.push(sequenced);
  for (const socket of liveSockets) send(socket, { type: "event", ...sequenced });
}

/** A resuming hello's backlog: the conversation after the hello's cursor, the mailbox after resumeAfterSeq. */
function sendBacklog(socket: WebSocket, hello: HelloFrame): void {
  if (hello.resumeAfterSeq === undefined) return;
  for (const cursor of hello.conversations ?? [])
    for (const message of log.slice(cursor.afterSeq)) send(socket, { type: "message", message });
  for (const sequenced of mailbox.slice(hello.resumeAfterSeq)) send(socket, { type: "event", ...sequenced });
}

async function startEdge(): Promise<TestEdge> {
  const server = new WebSocketServer({ host: "127.0.0.1", port: 0 });
  servers.push(server);
  await once(server, "listening");
  const edge: TestEdge = {
    url: `ws://127.0.0.1:${(server.address() as AddressInfo).port}/ws`,
    hellos: [],
    sentClientMessageIds: [],
    holdAcks: false,
    kill: async () => {
      for (const socket of server.clients) socket.terminate();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
  server.on("connection", (socket) => {
    socket.on("close", () => liveSockets.delete(socket));
    socket.on("message", (data) => {
      const decoded = decodeClientFrame(String(data));
      if (!decoded.ok) throw new Error(`the client sent an undecodable frame: ${String(data)}`);
      const frame = decoded.frame;
      if (frame.type === "hello") {
        edge.hellos.push({ resumeAfterSeq: frame.resumeAfterSeq, conversations: frame.conversations });
        send(socket, {
          type: "welcome",
          protocolVersion,
          sessionId: `s${edge.hellos.length}`,
          userId: "alice",
          deviceId: "d",
          cellId: "a",
          heartbeatIntervalMs: 60_000,
        });
        sendBacklog(socket, frame);
        send(socket, { type: "synced", seq: mailbox.length });
        liveSockets.add(socket);
      } else if (frame.type === "send") {
        edge.sentClientMessageIds.push(frame.clientMessageId);
        const message = append("alice", frame.clientMessageId, frame.body);
        if (!edge.holdAcks)
          send(socket, {
            type: "ack",
            requestId: frame.requestId,
            conversationId: message.conversationId,
            messageId: message.messageId,
            seq: message.seq,
            sentAtMs: message.sentAtMs,
          });
      } else if (frame.type === "ping") {
        send(socket, { type: "pong", requestId: frame.requestId });
      }
    });
  });
  return edge;
}

afterAll(async () => {
  for (const server of servers) {
    for (const socket of server.clients) socket.terminate();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  }
});

function waitFor<E extends keyof CellwireClientEvents>(
  client: CellwireClient,
  event: E,
  wanted: (payload: CellwireClientEvents[E]) => boolean,
): Promise<CellwireClientEvents[E]> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      unsubscribe();
      reject(new Error(`no matching ${event} event within ${deadlineMs} ms (state ${client.state}, url ${client.url})`));
    }, deadlineMs);
    const unsubscribe = client.on(event, (payload) => {
      if (!wanted(payload)) return;
      clearTimeout(timer);
      unsubscribe();
      resolve(payload);
    });
  });
}

describe("CellwireClient failover between two ws edges (Node)", () => {
  it("moves to the second edge when the first dies, resumes, settles the held send once; then rotates while both are down", async () => {
    const edgeA = await startEdge();
    const edgeB = await startEdge();
    const states: StateChange[] = [];
    const emitted: string[] = [];
    const client = new CellwireClient({
      url: [edgeA.url, edgeB.url],
      WebSocket,
      tokenProvider: async () => "token",
      // random() = 0: each delay at its bound, so the growth below is exact.
      random: () => 0,
      backoff: { initialDelayMs: 10, delayMsMax: 1000 },
    });
    client.on("state", (change) => states.push(change));
    client.on("message", ({ seq, body }) => emitted.push(`${seq} ${body}`));
    client.on("event", ({ seq, event }) => emitted.push(`event ${seq} ${event.kind}`));
    try {
      append("bob", "cm-before", "before");
      appendReceipt(1);
      await client.connect();
      await expect(client.whenSynced()).resolves.toBe(1);
      expect(client.url).toBe(edgeA.url);

      // Edge A stores the send (its message comes back live) but dies before the ack leaves.
      edgeA.holdAcks = true;
      const ownEvent = waitFor(client, "message", (message) => message.clientMessageId === "cm-held");
      let settlements = 0;
      const sent = client.send(directConversationId, "held", { clientMessageId: "cm-held" }).finally(() => {
        settlements += 1;
      });
      await ownEvent;
      const waiting = waitFor(client, "state", (change) => change.state === "waiting_to_reconnect");
      const reopened = waitFor(client, "state", (change) => change.state === "open");
      await edgeA.kill();
      await expect(waiting).resolves.toMatchObject({ closeCode: 1006, url: edgeB.url, reconnectDelayMs: 5 });
      append("bob", "cm-away", "away");
      appendReceipt(3);
      await expect(reopened).resolves.toMatchObject({ url: edgeB.url });
      await expect(sent).resolves.toMatchObject({ seq: 2, clientMessageId: "cm-held" });
      await expect(client.whenSynced()).resolves.toBe(2);
      expect(edgeB.hellos).toEqual([{ resumeAfterSeq: 1, conversations: [{ conversationId: directConversationId, afterSeq: 2 }] }]);
      expect(edgeA.sentClientMessageIds).toEqual(["cm-held"]);
      expect(edgeB.sentClientMessageIds).toEqual(["cm-held"]);
      expect(settlements).toBe(1);
      expect(emitted).toEqual(["2 held", "3 away", "event 2 receipt"]);

      // Both down. The session on B was not stable (stableConnectionMs), so this run of failures gets no
      // second failover: the backoff goes on growing (attempt 1, 2, 3, 4) while the URLs alternate.
      const fromB = states.length;
      const fourthWait = new Promise<void>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`fewer than 4 reconnect waits within ${deadlineMs} ms`)), deadlineMs);
        const unsubscribe = client.on("state", () => {
          if (states.slice(fromB).filter((change) => change.state === "waiting_to_reconnect").length < 4) return;
          clearTimeout(timer);
          unsubscribe();
          resolve();
        });
      });
      await edgeB.kill();
      await fourthWait;
      const waits = states.slice(fromB).filter((change) => change.state === "waiting_to_reconnect");
      expect(waits.map((change) => change.url)).toEqual([edgeA.url, edgeB.url, edgeA.url, edgeB.url]);
      expect(waits.map((change) => change.reconnectDelayMs)).toEqual([20, 40, 80, 160]);
      expect(waits.every((change) => change.closeCode === 1006)).toBe(true);
    } finally {
      client.close();
    }
  });
});
