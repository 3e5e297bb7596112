// The spine, end to end on real processes, Redis, NATS and Postgres: alice on edge 1 and bob on edge 2,
// living in different cells, exchange direct and group messages; bad input gets documented codes; the
// CLI works across edges; history survives a full restart of the topology.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { WebSocket } from "ws";
import type { NatsConnection } from "@nats-io/transport-node";
import { CellwireClient } from "@cellwire/client";
import { DirectoryClient } from "@cellwire/cluster";
import { defaultDevKeyDirectory, signDevToken } from "@cellwire/edge/dev-keys";
import { closeCodes, protocolVersion, type Message } from "@cellwire/protocol";
import { RawSocket } from "../test/raw-socket.ts";
import { runCli } from "../test/run-cli.ts";
import { startTestTopology, type TestTopology } from "./test-topology.ts";

let test: TestTopology;
let nats: NatsConnection;
let directory: DirectoryClient;
const clients: CellwireClient[] = [];

function edgeUrl(index: number): string {
  const edge = test.topology.edges[index];
  if (edge === undefined) throw new Error(`no edge ${index}`);
  return edge.webSocketUrl;
}

type Device = {
  readonly client: CellwireClient;
  readonly received: Message[];
  /** The first `count` messages of one conversation (a late relay of an earlier test may arrive first). */
  waitFor(conversationId: string, count: number, deadlineMs?: number): Promise<Message[]>;
};

async function device(userId: string, edgeIndex: number, deviceId = "phone"): Promise<Device> {
  const client = new CellwireClient({
    url: edgeUrl(edgeIndex),
    deviceId,
    WebSocket,
    tokenProvider: () => signDevToken(defaultDevKeyDirectory, userId, { deviceId }),
  });
  clients.push(client);
  const received: Message[] = [];
  const waiters = new Set<() => void>();
  client.on("message", (message) => {
    received.push(message);
    for (const waiter of [...waiters]) waiter();
  });
  await client.connect();
  return {
    client,
    received,
    waitFor: (conversationId, count, deadlineMs = 10_000) =>
      new Promise((resolve, reject) => {
        const inConversation = (): Message[] => received.filter((message) => message.conversationId === conversationId);
        const check = (): void => {
          if (inConversation().length < count) return;
          clearTimeout(timer);
          waiters.delete(check);
          resolve(inConversation().slice(0, count));
        };
        const timer = setTimeout(() => {
          waiters.delete(check);
          reject(new Error(`${userId}/${deviceId} received ${inConversation().length} of ${count} messages of ${conversationId}`));
        }, deadlineMs);
        waiters.add(check);
        check();
      }),
  };
}

async function rawSession(userId: string, edgeIndex = 0): Promise<RawSocket> {
  const socket = await RawSocket.open(edgeUrl(edgeIndex));
  socket.send(
    JSON.stringify({ type: "hello", protocolVersion, token: await signDevToken(defaultDevKeyDirectory, userId), deviceId: "raw" }),
  );
  await socket.frame((frame) => frame["type"] === "welcome");
  return socket;
}

beforeAll(async () => {
  test = await startTestTopology({ label: "spine", extraEnvironment: { EDGE_AUTH_TIMEOUT_MS: "1500" } });
  nats = await test.connectNats();
  directory = new DirectoryClient(nats, test.namespace, 5000);
  // Pin users to cells so that the cross-cell path is exercised whatever the placement weights say.
  for (const [userId, cellId] of [
    ["alice", "a"],
    ["bob", "b"],
    ["carol", "a"],
    ["dave", "b"],
    ["eve", "b"],
  ] as const) {
    const { entry } = await directory.assignUser(userId, cellId);
    expect(entry.cellId).toBe(cellId);
  }
});

afterAll(async () => {
  for (const client of clients) client.close();
  await nats?.close();
  await test?.destroy();
});

describe("the spine", () => {
  it("runs every process with its documented title", () => {
    expect(test.topology.processNames.sort()).toEqual(
      [
        "cellwire-directory",
        "cellwire-edge-1",
        "cellwire-edge-2",
        "cellwire-worker-a-1",
        "cellwire-worker-a-2",
        "cellwire-worker-b-1",
        "cellwire-worker-b-2",
      ].sort(),
    );
  });

  it("delivers direct messages between users in different cells on different edges", async () => {
    const alice = await device("alice", 0);
    const aliceLaptop = await device("alice", 1, "laptop");
    const bob = await device("bob", 1);

    const conversation = await alice.client.openDirect("bob");
    expect(conversation.kind).toBe("direct");
    expect(conversation.memberUserIds.sort()).toEqual(["alice", "bob"]);
    const fromBob = await bob.client.openDirect("alice");
    expect(fromBob.conversationId).toBe(conversation.conversationId);

    const ack = await alice.client.send(conversation.conversationId, "hello bob");
    expect(ack.conversationId).toBe(conversation.conversationId);
    expect(ack.seq).toBe(1);

    const [atBob] = await bob.waitFor(conversation.conversationId, 1);
    expect(atBob).toMatchObject({
      conversationId: conversation.conversationId,
      seq: 1,
      senderUserId: "alice",
      senderDeviceId: "phone",
      body: "hello bob",
      messageId: ack.messageId,
    });
    // The sender's other device sees what she sent.
    const [atLaptop] = await aliceLaptop.waitFor(conversation.conversationId, 1);
    expect(atLaptop?.messageId).toBe(ack.messageId);

    const reply = await bob.client.send(conversation.conversationId, "hi alice");
    expect(reply.seq).toBe(2);
    const atAlice = await alice.waitFor(conversation.conversationId, 2);
    expect(atAlice.map((message) => message.body)).toEqual(["hello bob", "hi alice"]);

    const page = await bob.client.history(conversation.conversationId, { limit: 10 });
    expect(page.messages.map((message) => message.seq)).toEqual([1, 2]);
    expect(page.hasMore).toBe(false);
  });

  it("returns the same ack for a retried clientMessageId and stores one message", async () => {
    const alice = await device("alice", 0, "retry");
    const conversation = await alice.client.openDirect("dave");
    const first = await alice.client.send(conversation.conversationId, "once", { clientMessageId: "retry-1" });
    const second = await alice.client.send(conversation.conversationId, "once", { clientMessageId: "retry-1" });
    expect(second.messageId).toBe(first.messageId);
    expect(second.seq).toBe(first.seq);
    const page = await alice.client.history(conversation.conversationId, {});
    expect(page.messages.filter((message) => message.clientMessageId === "retry-1")).toHaveLength(1);
  });

  it("returns the same group for a createGroup retried with its clientGroupId, and a new one for another key", async () => {
    const alice = await device("alice", 0, "group-retry");
    const first = await alice.client.createGroup("crew", ["bob"], { clientGroupId: "group-retry-1" });
    const retried = await alice.client.createGroup("crew", ["bob"], { clientGroupId: "group-retry-1" });
    expect(retried.conversationId).toBe(first.conversationId);
    expect(retried.memberUserIds).toEqual(first.memberUserIds);
    // A message sent between the attempts is still there: the retry did not make a fresh group.
    await alice.client.send(first.conversationId, "kept");
    expect((await alice.client.createGroup("crew", ["bob"], { clientGroupId: "group-retry-1" })).conversationId).toBe(first.conversationId);
    expect((await alice.client.history(first.conversationId, {})).messages.map((message) => message.body)).toEqual(["kept"]);
    const other = await alice.client.createGroup("crew", ["bob"], { clientGroupId: "group-retry-2" });
    expect(other.conversationId).not.toBe(first.conversationId);
  });

  it("refuses a clientMessageId reused with another body (client_message_id_reused, not retryable) and keeps the original", async () => {
    const alice = await device("alice", 0, "reused");
    const conversation = await alice.client.openDirect("dave");
    const first = await alice.client.send(conversation.conversationId, "the original", { clientMessageId: "reused-1" });
    await expect(alice.client.send(conversation.conversationId, "another message", { clientMessageId: "reused-1" })).rejects.toMatchObject({
      code: "client_message_id_reused",
      retryable: false,
    });
    // A true retry still gets the original ack.
    expect((await alice.client.send(conversation.conversationId, "the original", { clientMessageId: "reused-1" })).messageId).toBe(
      first.messageId,
    );
    const page = await alice.client.history(conversation.conversationId, {});
    expect(page.messages.filter((message) => message.clientMessageId === "reused-1").map((message) => message.body)).toEqual([
      "the original",
    ]);
  });

  it("runs group conversations across cells and keeps non-members out", async () => {
    const alice = await device("alice", 0, "group");
    const bob = await device("bob", 1, "group");
    const carol = await device("carol", 1, "group");
    const dave = await device("dave", 0, "group");
    const eve = await device("eve", 0, "group");

    const group = await alice.client.createGroup("friends", ["bob", "carol"]);
    expect(group.kind).toBe("group");
    expect(group.memberUserIds.sort()).toEqual(["alice", "bob", "carol"]);

    await bob.client.send(group.conversationId, "hi all");
    for (const member of [alice, bob, carol]) expect((await member.waitFor(group.conversationId, 1))[0]?.body).toBe("hi all");

    await expect(eve.client.send(group.conversationId, "let me in")).rejects.toMatchObject({ code: "not_a_member" });
    await expect(eve.client.history(group.conversationId, {})).rejects.toMatchObject({ code: "not_a_member" });

    const grown = await carol.client.addMembers(group.conversationId, ["dave"]);
    expect(grown.memberUserIds).toContain("dave");
    const ack = await dave.client.send(group.conversationId, "thanks");
    expect(ack.seq).toBe(2);
    expect((await alice.waitFor(group.conversationId, 2))[1]?.body).toBe("thanks");
    expect(eve.received).toHaveLength(0);

    for (let index = 0; index < 5; index++) await alice.client.send(group.conversationId, `page ${index}`);
    const newest = await carol.client.history(group.conversationId, { limit: 3 });
    expect(newest.messages.map((message) => message.seq)).toEqual([5, 6, 7]);
    expect(newest.hasMore).toBe(true);
    const older = await carol.client.history(group.conversationId, { limit: 10, beforeSeq: 5 });
    expect(older.messages.map((message) => message.seq)).toEqual([1, 2, 3, 4]);
    expect(older.hasMore).toBe(false);
  });

  it("answers bad frames with documented error codes and keeps the socket usable", async () => {
    const socket = await rawSession("alice");
    socket.send("this is not json");
    expect(await socket.frame((frame) => frame["type"] === "error" && frame["code"] === "malformed_frame")).toMatchObject({
      retryable: false,
    });
    socket.send(JSON.stringify({ type: "teleport", requestId: "r1" }));
    expect(await socket.frame((frame) => frame["requestId"] === "r1")).toMatchObject({ type: "error", code: "unknown_frame_type" });
    socket.send(JSON.stringify({ type: "send", requestId: "r2", conversationId: "g-AAAAAAAAAAAAAAAAAAAAAA", body: "no client id" }));
    expect(await socket.frame((frame) => frame["requestId"] === "r2")).toMatchObject({ type: "error", code: "invalid_field" });
    socket.send(
      JSON.stringify({ type: "send", requestId: "r3", conversationId: "g-AAAAAAAAAAAAAAAAAAAAAA", clientMessageId: "c1", body: "who?" }),
    );
    expect(await socket.frame((frame) => frame["requestId"] === "r3")).toMatchObject({ type: "error", code: "not_a_member" });
    socket.send(JSON.stringify({ type: "openDirect", requestId: "r4", peerUserId: "victim.>" }));
    expect(await socket.frame((frame) => frame["requestId"] === "r4")).toMatchObject({ type: "error", code: "invalid_field" });
    socket.send(Buffer.from([1, 2, 3]));
    await socket.frame(
      (frame) =>
        frame["type"] === "error" &&
        frame["code"] === "malformed_frame" &&
        socket.frames.filter((received) => received.text.includes("malformed_frame")).length === 2,
    );
    socket.send(JSON.stringify({ type: "ping", requestId: "still-alive" }));
    expect(await socket.frame((frame) => frame["requestId"] === "still-alive")).toMatchObject({ type: "pong" });
    socket.close();
  });

  it("closes sessions that do not authenticate with documented close codes", async () => {
    const silent = await RawSocket.open(edgeUrl(0));
    expect(await silent.closed(5000)).toBe(closeCodes.authentication_timeout.code);

    const forged = await RawSocket.open(edgeUrl(0));
    forged.send(JSON.stringify({ type: "hello", protocolVersion, token: "not.a.jwt" }));
    expect(await forged.closed()).toBe(closeCodes.token_invalid.code);

    // A token whose subject would widen a NATS subscription is refused before it reaches one.
    const wide = await RawSocket.open(edgeUrl(0));
    wide.send(JSON.stringify({ type: "hello", protocolVersion, token: await signDevToken(defaultDevKeyDirectory, "victim.>") }));
    expect(await wide.closed()).toBe(closeCodes.token_invalid.code);

    const expired = await RawSocket.open(edgeUrl(1));
    expired.send(
      JSON.stringify({
        type: "hello",
        protocolVersion,
        token: await signDevToken(defaultDevKeyDirectory, "alice", { expiresInSeconds: -60 }),
      }),
    );
    expect(await expired.closed()).toBe(closeCodes.token_expired.code);

    const early = await RawSocket.open(edgeUrl(1));
    early.send(JSON.stringify({ type: "ping", requestId: "too-early" }));
    expect(await early.closed()).toBe(closeCodes.protocol_violation.code);

    const future = await RawSocket.open(edgeUrl(1));
    future.send(JSON.stringify({ type: "hello", protocolVersion: 99, token: await signDevToken(defaultDevKeyDirectory, "alice") }));
    expect(await future.closed()).toBe(closeCodes.unsupported_protocol_version.code);

    // Protocol 1 meant messages as mailbox events; an edge serving 2 refuses it rather than mislead it (decision 0010).
    const older = await RawSocket.open(edgeUrl(0));
    older.send(
      JSON.stringify({ type: "hello", protocolVersion: protocolVersion - 1, token: await signDevToken(defaultDevKeyDirectory, "alice") }),
    );
    expect(await older.closed()).toBe(closeCodes.unsupported_protocol_version.code);
  });

  it("carries `cellwire send` on edge 1 to `cellwire listen` on edge 2", async () => {
    let listening!: () => void;
    const ready = new Promise<void>((resolve) => {
      listening = resolve;
    });
    const listener = runCli(
      ["listen", "--as", "bob", "--device", "cli", "--count", "2", "--timeout-ms", "20000", "--edge", edgeUrl(1)],
      (stderr) => {
        if (stderr.includes("listening as bob")) listening();
      },
    );
    await ready;
    const sender = runCli(["send", "--as", "alice", "--to", "bob", "--edge", edgeUrl(0), "from the command line"]);
    const sent = await sender.done;
    expect(sent.stderr).toBe("");
    expect(sent.status).toBe(0);
    const ack = JSON.parse(sent.stdout.trim()) as { seq: number; messageId: string };
    const second = await runCli(["send", "--as", "alice", "--to", "bob", "--edge", edgeUrl(0), "and again"]).done;
    expect(second.status).toBe(0);

    const heard = await listener.done;
    expect(heard.status).toBe(0);
    // The conversation exists already (the first test opened it), so a live listener gets no joined event:
    // only the two messages, as message lines, in the conversation's seq order.
    const lines = heard.stdout
      .trim()
      .split("\n")
      .map((line) => JSON.parse(line) as { type: string; message: Message });
    expect(lines.map((line) => line.type)).toEqual(["message", "message"]);
    expect(lines.map((line) => line.message.body)).toEqual(["from the command line", "and again"]);
    expect(lines[0]?.message.messageId).toBe(ack.messageId);
    expect(lines[0]?.message.seq).toBe(ack.seq);
    expect(lines[1]?.message.seq).toBe(ack.seq + 1);

    const history = await runCli(["history", "--as", "bob", "--with", "alice", "--edge", edgeUrl(1), "--limit", "100"]).done;
    expect(history.status).toBe(0);
    const stored = history.stdout
      .trim()
      .split("\n")
      .map((line) => JSON.parse(line) as Message);
    const seqs = stored.map((message) => message.seq);
    expect(seqs).toEqual([...seqs].sort((left, right) => left - right));
    expect(stored.at(-1)?.body).toBe("and again");
  });

  it("shows a cell's ring with `cellwire ring`", async () => {
    const result = await runCli(["ring", "a", "--json"], undefined, {
      CELLWIRE_NAMESPACE: test.namespace,
      ...test.natsEnvironment("admin"),
    }).done;
    expect(result.status).toBe(0);
    const ring = JSON.parse(result.stdout) as {
      cellId: string;
      members: { workerId: string; live: boolean; share: number; leaseAgeMs: number }[];
    };
    expect(ring.cellId).toBe("a");
    expect(ring.members.map((member) => member.workerId)).toEqual(["a-1", "a-2"]);
    expect(ring.members.every((member) => member.live && member.share > 0.2 && member.leaseAgeMs < 2000)).toBe(true);
    expect(ring.members.reduce((sum, member) => sum + member.share, 0)).toBeCloseTo(1, 6);
    const missing = await runCli(["ring", "zz"], undefined, { CELLWIRE_NAMESPACE: test.namespace, ...test.natsEnvironment("admin") }).done;
    expect(missing.status).toBe(1);
  });

  it("answers `cellwire cells` and `cellwire whereis` from the directory", async () => {
    const environment = { CELLWIRE_NAMESPACE: test.namespace, ...test.natsEnvironment("admin") };
    const cells = await runCli(["cells", "--json"], undefined, environment).done;
    expect(cells.status).toBe(0);
    expect(
      (JSON.parse(cells.stdout) as { cells: { cellId: string; state: string }[] }).cells.map((cell) => [cell.cellId, cell.state]),
    ).toEqual([
      ["a", "active"],
      ["b", "active"],
    ]);
    const bob = await runCli(["whereis", "bob", "--json"], undefined, environment).done;
    expect(bob.status).toBe(0);
    expect(JSON.parse(bob.stdout)).toMatchObject({ userId: "bob", placed: true, cellId: "b" });
    const stranger = await runCli(["whereis", "nobody-yet", "--json"], undefined, environment).done;
    expect(stranger.status).toBe(1);
    expect(JSON.parse(stranger.stdout)).toEqual({ userId: "nobody-yet", placed: false });
    // Looking a user up places nothing: the user is still unknown afterwards.
    expect((await runCli(["whereis", "nobody-yet"], undefined, environment).done).status).toBe(1);
  });

  it("exits non-zero from `listen` on timeout", async () => {
    const result = await runCli(["listen", "--as", "eve", "--count", "1", "--timeout-ms", "500", "--edge", edgeUrl(0)]).done;
    expect(result.status).not.toBe(0);
  });

  it("keeps history across a full restart of the topology", async () => {
    const before = await device("carol", 0, "before");
    const conversation = await before.client.openDirect("dave");
    const acks = [];
    for (let index = 0; index < 3; index++) acks.push(await before.client.send(conversation.conversationId, `durable ${index}`));
    before.client.close();

    await test.stopProcesses();
    await test.restart();

    const after = await device("dave", 1, "after");
    const page = await after.client.history(conversation.conversationId, { limit: 50 });
    expect(page.messages.map((message) => message.messageId)).toEqual(acks.map((ack) => ack.messageId));
    const next = await after.client.send(conversation.conversationId, "after the restart");
    expect(next.seq).toBe(4);
  });
});
