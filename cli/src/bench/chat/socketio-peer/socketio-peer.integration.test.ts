// The chat benchmark's Socket.IO peer against the machine's Redis: two real server processes on free ports
// under a key of their own, users on different nodes, and the ChatConnection the load processes use. A
// message sent on node 1 must reach a member on node 2, which only the redis adapter can carry.
import { randomBytes } from "node:crypto";
import { readFileSync } from "node:fs";
import { afterAll, beforeAll, describe, expect, it, onTestFailed } from "vitest";
import { io, type Socket } from "socket.io-client";
import type { ChatConnection } from "../chat-connection.ts";
import { SocketIoPeerStartError, startSocketIoPeer, type SocketIoPeer } from "./peer-cluster.ts";
import { SocketIoConnectionError, socketIoConnection } from "./socketio-connection.ts";

const redisUrl = "redis://127.0.0.1:6379";
const waitDeadlineMs = 10_000;
const acknowledgementTimeoutMs = 5_000;

type ReceivedMessage = { readonly conversationId: string; readonly body: string };

/** Records what a connection receives and lets a test wait, with a deadline, for a number of messages. */
class Inbox {
  readonly messages: ReceivedMessage[] = [];
  private readonly waiters: { readonly count: number; readonly wake: () => void }[] = [];

  constructor(connection: ChatConnection) {
    connection.onMessage((conversationId, body) => {
      this.messages.push({ conversationId, body });
      for (const waiter of this.waiters.filter(({ count }) => this.messages.length >= count)) waiter.wake();
    });
  }

  waitFor(count: number, who: string): Promise<void> {
    if (this.messages.length >= count) return Promise.resolve();
    return new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => {
        reject(
          new Error(
            `${who} received ${this.messages.length} of ${count} messages within ${waitDeadlineMs} ms: ${JSON.stringify(this.messages)}`,
          ),
        );
      }, waitDeadlineMs);
      const waiter = {
        count,
        wake: () => {
          clearTimeout(timer);
          this.waiters.splice(this.waiters.indexOf(waiter), 1);
          resolve();
        },
      };
      this.waiters.push(waiter);
    });
  }
}

function uniqueKey(): string {
  return `cellwire-bench-test-${randomBytes(6).toString("hex")}`;
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    if (error instanceof Error && "code" in error && error.code === "ESRCH") return false;
    throw error;
  }
}

function connected(socket: Socket): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no connection within ${waitDeadlineMs} ms`)), waitDeadlineMs);
    socket.once("connect", () => {
      clearTimeout(timer);
      resolve();
    });
  });
}

describe("a two-node Socket.IO peer", () => {
  let peer: SocketIoPeer | undefined;
  const output: string[] = [];
  const connections: ChatConnection[] = [];
  const rawSockets: Socket[] = [];

  function running(): SocketIoPeer {
    if (peer === undefined) throw new Error("the peer did not start");
    return peer;
  }

  function nodeUrls(): { first: string; second: string } {
    const [first, second] = running().urls;
    if (first === undefined || second === undefined) throw new Error(`expected two nodes, got ${running().urls.length}`);
    return { first, second };
  }

  async function connectUser(userId: string, serverUrls: readonly string[]): Promise<{ connection: ChatConnection; inbox: Inbox }> {
    const connection = socketIoConnection(userId, serverUrls);
    connections.push(connection);
    const inbox = new Inbox(connection);
    await connection.connect();
    return { connection, inbox };
  }

  async function rawSocket(url: string): Promise<Socket> {
    const socket = io(url, { transports: ["websocket"], forceNew: true });
    rawSockets.push(socket);
    await connected(socket);
    return socket;
  }

  beforeAll(async () => {
    peer = await startSocketIoPeer({
      nodes: 2,
      redisUrl,
      key: uniqueKey(),
      onOutput: (processName, line) => output.push(`${processName}: ${line}`),
    });
  });

  afterAll(async () => {
    try {
      for (const socket of rawSockets) socket.disconnect();
      await Promise.all(connections.map((connection) => connection.close()));
    } finally {
      await peer?.stop();
    }
  });

  it("runs each node under its own process title, on its own port", () => {
    onTestFailed(() => console.log(output.join("\n")));
    const { first, second } = nodeUrls();
    expect(first).toMatch(/^http:\/\/127\.0\.0\.1:[0-9]+$/);
    expect(second).not.toBe(first);
    for (const { processName, pid } of running().processes) {
      // process.title overwrites the process's argument area, which /proc shows as its command line.
      expect(readFileSync(`/proc/${pid}/cmdline`, "utf8")).toMatch(new RegExp(`^${processName}\\b`));
    }
    expect(running().processes.map(({ processName }) => processName)).toEqual(["socketio-peer-1", "socketio-peer-2"]);
  });

  it("delivers a message sent on node 1 to its sender and to a member on node 2, in order and once", async () => {
    onTestFailed(() => console.log(output.join("\n")));
    const { first, second } = nodeUrls();
    const alice = await connectUser("user-a", [first, second]);
    const bob = await connectUser("user-b", [second, first]);

    const conversationId = await alice.connection.createConversation(1, ["user-a", "user-b"]);
    expect(conversationId).toBe("c-1");
    await bob.connection.joinConversation(conversationId);

    await alice.connection.send(conversationId, "first");
    await alice.connection.send(conversationId, "second");
    await Promise.all([alice.inbox.waitFor(2, "user-a"), bob.inbox.waitFor(2, "user-b")]);

    // One sender, one Redis connection each way: the second message arriving means a duplicate of the
    // first would have arrived before it.
    const expected = [
      { conversationId, body: "first" },
      { conversationId, body: "second" },
    ];
    expect(alice.inbox.messages).toEqual(expected);
    expect(bob.inbox.messages).toEqual(expected);
  });

  it("refuses a send to an invalid conversation id, or with a body over the limit", async () => {
    const { first } = nodeUrls();
    const carol = await connectUser("user-c", [first]);
    await expect(carol.connection.send("not a valid id!", "hello")).rejects.toSatisfy(
      (error: unknown) => error instanceof SocketIoConnectionError && error.code === "rejected",
    );
    await expect(carol.connection.send("c-2", "x".repeat(32_769))).rejects.toSatisfy(
      (error: unknown) => error instanceof SocketIoConnectionError && error.code === "rejected",
    );
    // At the limit it is accepted.
    await carol.connection.send("c-2", "x".repeat(32_768));
  });

  it("acknowledges a malformed join with ok:false and keeps serving", async () => {
    const { first } = nodeUrls();
    const socket = await rawSocket(first);
    const invalid = { ok: false, error: "invalid" };
    const numberResponse: unknown = await socket.timeout(acknowledgementTimeoutMs).emitWithAck("join", 42);
    expect(numberResponse).toEqual(invalid);
    const objectResponse: unknown = await socket.timeout(acknowledgementTimeoutMs).emitWithAck("join", { conversationId: "c-1" });
    expect(objectResponse).toEqual(invalid);
    const extraArgumentResponse: unknown = await socket.timeout(acknowledgementTimeoutMs).emitWithAck("join", "c-1", "extra");
    expect(extraArgumentResponse).toEqual(invalid);
    // Without an acknowledgement there is no one to answer: ignored, and the socket stays connected.
    socket.emit("send", "not an object");
    socket.emit("join");
    // Events of one socket are handled in order: this answer comes after the two above were handled.
    const validResponse: unknown = await socket.timeout(acknowledgementTimeoutMs).emitWithAck("join", "c-1");
    expect(validResponse).toEqual({ ok: true });
    expect(socket.connected).toBe(true);
    for (const { pid } of running().processes) expect(isAlive(pid)).toBe(true);
  });

  it("stop() ends both processes", async () => {
    const processes = running().processes;
    await running().stop();
    for (const { processName, pid } of processes) {
      expect(isAlive(pid), `${processName} (pid ${pid})`).toBe(false);
      const lines = output.filter((line) => line.startsWith(`${processName}: `));
      // Stopped by its SIGTERM handler, not by the SIGKILL past the deadline.
      expect(
        lines.some((line) => line.endsWith(" info SIGTERM: stopping")),
        lines.join("\n"),
      ).toBe(true);
      expect(
        lines.some((line) => line.includes("did not stop within")),
        lines.join("\n"),
      ).toBe(false);
    }
  });
});

describe("a Socket.IO peer that cannot start", () => {
  it("names each node that failed and says why", async () => {
    const failure = startSocketIoPeer({ nodes: 2, redisUrl: "http://127.0.0.1:6379", key: uniqueKey() });
    await expect(failure).rejects.toBeInstanceOf(SocketIoPeerStartError);
    await expect(failure).rejects.toThrow(
      /socketio-peer-1 failed to start: .*SOCKETIO_PEER_REDIS_URL must be a redis:\/\/ or rediss:\/\/ URL/,
    );
    await expect(failure).rejects.toThrow(/socketio-peer-2 failed to start/);
  });
});
