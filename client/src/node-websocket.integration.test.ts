// The client with the `ws` package's WebSocket (what Node callers pass) against a small ws server on a
// loopback port: checks the real socket's event semantics (text data, close codes, error-then-close, and
// several frames read in one tick) that the unit tests' fake imitates. The server speaks protocol 2 as the
// edge does (docs/decisions/0009), for one conversation: on a resuming hello the conversation after the
// hello's cursor and the mailbox after resumeAfterSeq, then synced, then live messages and events.
import { once } from "node:events";
import type { AddressInfo } from "node:net";
import {
  closeCodes,
  decodeClientFrame,
  protocolVersion,
  type ConversationCursor,
  type Message,
  type SequencedEvent,
  type ServerFrame,
} from "@cellwire/protocol";
import { WebSocket, WebSocketServer } from "ws";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { CellwireClient, type CellwireClientEvents, type StateChange, type TokenRequest } from "./cellwire-client.ts";
import { directConversationId } from "../test/fake-edge.ts";

const deadlineMs = 5000;
let server: WebSocketServer;
let url: string;
const serverSockets: WebSocket[] = [];
const hellos: {
  readonly token: string;
  readonly resumeAfterSeq: number | undefined;
  readonly conversations: ConversationCursor[] | undefined;
}[] = [];
/** alice's mailbox: receipts only here. */
const mailbox: SequencedEvent[] = [];
/** The one conversation's log: the message with seq n is at index n - 1. */
const log: Message[] = [];
/** Sockets past their synced: they receive live messages and events. */
const liveSockets = new Set<WebSocket>();

function frameText(frame: ServerFrame): string {
  return JSON.stringify(frame);
}

function appendMessage(senderUserId: string, clientMessageId: string, body: string): Message {
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
  for (const socket of liveSockets) socket.send(frameText({ type: "message", message }));
  return message;
}

function appendReceipt(readSeq: number): void {
  const sequenced: SequencedEvent = {
    seq: mailbox.length + 1,
    event: { kind: "receipt", conversationId: directConversationId, userId: "bob", readSeq, deliveredSeq: readSeq },
  };
  mailbox.push(sequenced);
  for (const socket of liveSockets) socket.send(frameText({ type: "event", ...sequenced }));
}

beforeAll(async () => {
  server = new WebSocketServer({ host: "127.0.0.1", port: 0 });
  await once(server, "listening");
  url = `ws://127.0.0.1:${(server.address() as AddressInfo).port}/ws`;
  server.on("connection", (socket) => {
    serverSockets.push(socket);
    socket.on("close", () => liveSockets.delete(socket));
    socket.on("message", (data) => {
      const decoded = decodeClientFrame(String(data));
      if (!decoded.ok) return socket.close(closeCodes.protocol_violation.code, "bad frame");
      const frame = decoded.frame;
      const reply = (value: ServerFrame) => socket.send(frameText(value));
      if (frame.type === "hello") {
        hellos.push({ token: frame.token, resumeAfterSeq: frame.resumeAfterSeq, conversations: frame.conversations });
        if (frame.token === "expired") return socket.close(closeCodes.token_expired.code, "expired");
        reply({
          type: "welcome",
          protocolVersion,
          sessionId: `s${serverSockets.length}`,
          userId: "alice",
          deviceId: frame.deviceId ?? "d",
          cellId: "a",
          heartbeatIntervalMs: 60_000,
        });
        // Written back to back, so the client usually reads them in one tick with the welcome.
        if (frame.resumeAfterSeq !== undefined) {
          for (const cursor of frame.conversations ?? [])
            for (const message of log.slice(cursor.afterSeq)) reply({ type: "message", message });
          for (const sequenced of mailbox.slice(frame.resumeAfterSeq)) reply({ type: "event", ...sequenced });
        }
        reply({ type: "synced", seq: mailbox.length });
        liveSockets.add(socket);
        return;
      }
      if (frame.type === "send") {
        const existing = log.find((message) => message.clientMessageId === frame.clientMessageId);
        const message = existing ?? appendMessage("alice", frame.clientMessageId, frame.body);
        return reply({
          type: "ack",
          requestId: frame.requestId,
          conversationId: message.conversationId,
          messageId: message.messageId,
          seq: message.seq,
          sentAtMs: message.sentAtMs,
        });
      }
      if (frame.type === "ping") return reply({ type: "pong", requestId: frame.requestId });
    });
  });
});

afterAll(async () => {
  for (const socket of server.clients) socket.terminate();
  await new Promise<void>((resolve, reject) => server.close((error) => (error === undefined ? resolve() : reject(error))));
});

function waitFor<E extends keyof CellwireClientEvents>(
  client: CellwireClient,
  event: E,
  wanted: (payload: CellwireClientEvents[E]) => boolean,
): Promise<CellwireClientEvents[E]> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      unsubscribe();
      reject(new Error(`no matching ${event} event within ${deadlineMs} ms (state ${client.state})`));
    }, deadlineMs);
    const unsubscribe = client.on(event, (payload) => {
      if (!wanted(payload)) return;
      clearTimeout(timer);
      unsubscribe();
      resolve(payload);
    });
  });
}

const waitForState = (client: CellwireClient, wanted: (change: StateChange) => boolean) => waitFor(client, "state", wanted);

describe("CellwireClient with ws (Node)", () => {
  it("connects, sends, refreshes its token after 4101, resumes its positions after an abrupt drop, and stops on 4200", async () => {
    const tokens = ["expired", "good-1", "good-2"];
    const requests: TokenRequest[] = [];
    const client = new CellwireClient({
      url,
      deviceId: "node",
      WebSocket,
      tokenProvider: async (request) => {
        requests.push(request);
        return tokens.shift() ?? "good-n";
      },
      backoff: { initialDelayMs: 10, delayMsMax: 50 },
    });
    const received: string[] = [];
    client.on("message", ({ seq, body }) => received.push(`${seq} ${body}`));
    client.on("event", ({ seq, event }) => received.push(`event ${seq} ${event.kind}`));
    try {
      appendMessage("bob", "cm-before", "before the first connect");
      appendReceipt(1);
      const welcome = await client.connect();
      expect(welcome).toMatchObject({ userId: "alice", deviceId: "node" });
      // Without a stored position the session starts live at the head; the synced may have come in the welcome's tick.
      await expect(client.whenSynced()).resolves.toBe(1);
      expect(hellos.slice(0, 2)).toEqual([
        { token: "expired", resumeAfterSeq: undefined, conversations: undefined },
        { token: "good-1", resumeAfterSeq: undefined, conversations: undefined },
      ]);
      expect(requests.map((request) => request.reason)).toEqual(["connect", "refresh"]);
      const ownMessage = waitFor(client, "message", (message) => message.clientMessageId === "cm-own");
      await expect(client.send(directConversationId, "over a real socket", { clientMessageId: "cm-own" })).resolves.toMatchObject({
        seq: 2,
      });
      await ownMessage;
      expect(client.positions()).toEqual({ mailboxSeq: 1, conversations: { [directConversationId]: 2 } });

      const reopened = waitForState(client, (change) => change.state === "open");
      serverSockets.at(-1)?.terminate();
      await waitForState(client, (change) => change.state === "waiting_to_reconnect");
      appendMessage("bob", "cm-away-1", "while away 1");
      appendMessage("bob", "cm-away-2", "while away 2");
      appendReceipt(3);
      await reopened;
      await expect(client.whenSynced()).resolves.toBe(2);
      expect(requests.at(-1)?.reason).toBe("reconnect");
      expect(hellos.at(-1)).toEqual({
        token: "good-2",
        resumeAfterSeq: 1,
        conversations: [{ conversationId: directConversationId, afterSeq: 2 }],
      });
      expect(received).toEqual(["2 over a real socket", "3 while away 1", "4 while away 2", "event 2 receipt"]);
      await expect(client.send(directConversationId, "after the drop")).resolves.toMatchObject({ seq: 5 });

      const stopped = waitForState(client, (change) => change.state === "closed");
      serverSockets.at(-1)?.close(closeCodes.protocol_violation.code, "go away");
      await expect(stopped).resolves.toMatchObject({ closedReason: "stopped_by_server", closeCode: closeCodes.protocol_violation.code });
    } finally {
      client.close();
    }
  });
});
