// What a non-member learns about a conversation, on the real topology (two edges, a cell, the directory on
// Redis, NATS, Postgres): nothing. For every request that names a conversation, the raw frame a non-member
// gets for a conversation that exists is byte for byte the one it gets for an id nobody ever used, on an
// edge that relayed the conversation's replies (its member cache knows the conversation) and on one that
// did not (it asks the directory and the cell). And presence under the default policy
// (EDGE_PRESENCE_POLICY=shared_conversation): only users who share a conversation see each other; anyone
// else reads exactly like a user who never came online, and hears nothing.
import { createHash, randomBytes } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { WebSocket } from "ws";
import pg from "pg";
import { ensureCellDatabase } from "@cellwire/cells";
import { CellwireClient } from "@cellwire/client";
import { devDirectConversationKey, directConversationId } from "@cellwire/cluster";
import { defaultDevKeyDirectory, signDevToken } from "@cellwire/edge/dev-keys";
import { protocolVersion } from "@cellwire/protocol";
import { RawSocket } from "../test/raw-socket.ts";
import { startTestTopology, testServices, type TestTopology } from "./test-topology.ts";

const frameDeadlineMs = 20_000;

let test: TestTopology;
const clients: CellwireClient[] = [];
const sockets: RawSocket[] = [];

function edgeUrl(index: number): string {
  const edge = test.topology.edges[index];
  if (edge === undefined) throw new Error(`no edge ${index}`);
  return edge.webSocketUrl;
}

async function client(userId: string, edgeIndex: number): Promise<CellwireClient> {
  const created = new CellwireClient({
    url: edgeUrl(edgeIndex),
    deviceId: "phone",
    WebSocket,
    tokenProvider: () => signDevToken(defaultDevKeyDirectory, userId, { deviceId: "phone" }),
  });
  clients.push(created);
  await created.connect();
  return created;
}

/** The requests that name a conversation, each with the same requestId whatever the conversation. */
function probes(conversationId: string): Record<string, unknown>[] {
  return [
    { type: "send", requestId: "p-send", conversationId, clientMessageId: "probe-1", body: "let me in" },
    { type: "history", requestId: "p-history", conversationId },
    { type: "history", requestId: "p-history-before", conversationId, beforeSeq: 2, limit: 1 },
    { type: "read", requestId: "p-read", conversationId, seq: 1 },
    { type: "delivered", requestId: "p-delivered", conversationId, seq: 1 },
    { type: "typing", requestId: "p-typing", conversationId },
    { type: "addMembers", requestId: "p-add", conversationId, userIds: ["mallory"] },
  ];
}

/**
 * A non-member's session on one edge that follows `conversationId` from its hello (the resume path) and
 * then asks every probe about it: the raw text of everything it received after its welcome (the welcome
 * carries a random session id), replies in request order.
 */
async function nonMemberView(userId: string, edgeIndex: number, conversationId: string): Promise<Record<string, string>> {
  const socket = await RawSocket.open(edgeUrl(edgeIndex), frameDeadlineMs);
  sockets.push(socket);
  const token = await signDevToken(defaultDevKeyDirectory, userId);
  socket.send(
    JSON.stringify({
      type: "hello",
      protocolVersion,
      token,
      deviceId: "probe",
      resumeAfterSeq: 0,
      conversations: [{ conversationId, afterSeq: 0 }],
    }),
  );
  await socket.frame((frame) => frame["type"] === "synced", frameDeadlineMs);
  const view: Record<string, string> = {
    sync: socket.frames
      .map((frame) => frame.text)
      .filter((text) => !text.includes('"type":"welcome"'))
      .join("\n"),
  };
  for (const probe of probes(conversationId)) {
    const requestId = String(probe["requestId"]);
    const from = socket.frames.length;
    socket.send(JSON.stringify(probe));
    await socket.frame((frame) => frame["requestId"] === requestId, frameDeadlineMs, from);
    view[requestId] = socket.frames.slice(from).find((frame) => frame.text.includes(`"requestId":"${requestId}"`))?.text ?? "";
  }
  socket.close();
  return view;
}

/** Replaces the conversation id in a view, so that views of two ids compare byte for byte elsewhere. */
function withoutId(view: Record<string, string>, conversationId: string): Record<string, string> {
  return Object.fromEntries(Object.entries(view).map(([key, text]) => [key, text.split(conversationId).join("<id>")]));
}

beforeAll(async () => {
  test = await startTestTopology({
    label: "privacy",
    cells: [{ cellId: "a", workerCount: 1 }],
    edgeCount: 2,
    extraEnvironment: {
      // A conversation is frozen by hand below, with no mover: the sweeper must not try to finish the move.
      WORKER_FROZEN_SWEEP_INTERVAL_MS: "600000",
      // How long the edge retries a member's request to a moving conversation before cell_unavailable.
      EDGE_MIGRATION_WAIT_MS: "1500",
    },
  });
});

afterAll(async () => {
  for (const created of clients) created.close();
  for (const socket of sockets) socket.close();
  await test?.destroy();
});

describe("a non-member learns nothing about a conversation", () => {
  it("gets byte-identical frames for an existing direct or group conversation and an unknown id, on every request and both edges", async () => {
    // alice and bob talk on edge 1 (index 0): it relayed their replies, edge 2 never saw them.
    const alice = await client("alice", 0);
    await client("bob", 0);
    const direct = await alice.openDirect("bob");
    const group = await alice.createGroup("alice and bob", ["bob"]);
    for (const conversation of [direct, group]) {
      await alice.send(conversation.conversationId, "one");
      await alice.send(conversation.conversationId, "two");
    }
    // The topology runs with the dev key, which the test knows; a deployment's own key is secret.
    const unknownDirectId = directConversationId(devDirectConversationKey, `nobody${randomBytes(4).toString("hex")}`, "noone");
    // Nobody without the key can compute a pair's id: not with the digest of the pair alone, as ids once were.
    const digestOfPair = `d-${createHash("sha256").update("alice\nbob").digest("base64url").slice(0, 22)}`;
    expect(direct.conversationId).not.toBe(digestOfPair);
    expect(direct.conversationId).toBe(directConversationId(devDirectConversationKey, "alice", "bob"));
    const unknownGroupId = `g-${randomBytes(17).toString("base64url").slice(0, 22)}`;

    for (const edgeIndex of [0, 1]) {
      for (const [existingId, unknownId] of [
        [direct.conversationId, unknownDirectId],
        [group.conversationId, unknownGroupId],
      ] as const) {
        const existing = withoutId(await nonMemberView("mallory", edgeIndex, existingId), existingId);
        const unknown = withoutId(await nonMemberView("mallory", edgeIndex, unknownId), unknownId);
        expect(existing, `edge ${edgeIndex + 1}, ${existingId} against ${unknownId}`).toEqual(unknown);
        // And what both say is the refusal, not an accident such as a timeout or a bad probe.
        expect(JSON.parse(existing["p-send"] ?? "{}")).toMatchObject({ type: "error", code: "not_a_member", retryable: false });
        expect(JSON.parse(existing["p-typing"] ?? "{}")).toMatchObject({ type: "error", code: "not_a_member" });
        expect(JSON.parse(existing["p-add"] ?? "{}")).toMatchObject({ type: "error", code: "not_a_member" });
        expect(existing["sync"]).toBe('{"type":"synced","seq":0}');
      }
    }
  });

  it("gets the same bytes for a conversation frozen by a migration as for an unknown id", async () => {
    const alice = await client("alice", 0);
    const group = await alice.createGroup("moving soon", ["bob"]);
    await alice.send(group.conversationId, "one");
    await alice.send(group.conversationId, "two");
    const unknownGroupId = `g-${randomBytes(17).toString("base64url").slice(0, 22)}`;
    // The state a migration's freeze leaves in the old home, held there (the mover is not running).
    const database = new pg.Client({ connectionString: await ensureCellDatabase(testServices.postgresAdminUrl, test.namespace, "a") });
    await database.connect();
    try {
      await database.query("update conversations set state = 'frozen', moving_to_cell_id = 'b' where id = $1", [group.conversationId]);
      for (const edgeIndex of [0, 1]) {
        const existing = withoutId(await nonMemberView("mallory", edgeIndex, group.conversationId), group.conversationId);
        const unknown = withoutId(await nonMemberView("mallory", edgeIndex, unknownGroupId), unknownGroupId);
        expect(existing, `edge ${edgeIndex + 1}`).toEqual(unknown);
        expect(JSON.parse(existing["p-send"] ?? "{}")).toMatchObject({ code: "not_a_member" });
      }
    } finally {
      await database.query("update conversations set state = 'active', moving_to_cell_id = null where id = $1", [group.conversationId]);
      await database.end();
    }
  });
});

/** A raw session of `userId` on one edge, welcomed. */
async function rawSession(userId: string, edgeIndex: number): Promise<RawSocket> {
  const socket = await RawSocket.open(edgeUrl(edgeIndex), frameDeadlineMs);
  sockets.push(socket);
  socket.send(
    JSON.stringify({ type: "hello", protocolVersion, token: await signDevToken(defaultDevKeyDirectory, userId), deviceId: "watcher" }),
  );
  await socket.frame((frame) => frame["type"] === "welcome", frameDeadlineMs);
  return socket;
}

/** The raw presenceSnapshot answering a watch of `userIds`. */
async function snapshotText(socket: RawSocket, requestId: string, userIds: readonly string[]): Promise<string> {
  const from = socket.frames.length;
  socket.send(JSON.stringify({ type: "watchPresence", requestId, userIds }));
  await socket.frame((frame) => frame["requestId"] === requestId, frameDeadlineMs, from);
  return socket.frames.slice(from).find((frame) => frame.text.includes(`"requestId":"${requestId}"`))?.text ?? "";
}

const presenceOf = (socket: RawSocket, userId: string): string[] =>
  socket.frames.flatMap((frame) => {
    const value = frame.value as Record<string, unknown> | undefined;
    return value?.["type"] === "presence" && value["userId"] === userId ? [String(value["status"])] : [];
  });

describe("presence is private by default", () => {
  it("shows a user's presence to those who share a conversation with them, on any edge; to anyone else it reads like a user who never came online", async () => {
    const pam = await client("pam", 0);
    await client("quinn", 1);
    await pam.createGroup("pam and quinn", ["quinn"]);
    // pam is online on edge 1; quinn shares a group with her, oscar shares nothing; both watch from edge 2.
    const quinn = await rawSession("quinn", 1);
    const oscar = await rawSession("oscar", 1);
    const unknownUserId = `ghost${randomBytes(4).toString("hex")}`;

    const quinnSees = JSON.parse(await snapshotText(quinn, "w-1", ["pam"])) as { users: { status: string }[] };
    expect(quinnSees.users[0]?.status).toBe("online");
    const forbidden = await snapshotText(oscar, "w-1", ["pam"]);
    const unknown = await snapshotText(oscar, "w-1", [unknownUserId]);
    expect(forbidden.split("pam").join("<user>")).toBe(unknown.split(unknownUserId).join("<user>"));
    expect(JSON.parse(forbidden)).toEqual({
      type: "presenceSnapshot",
      requestId: "w-1",
      users: [{ userId: "pam", status: "offline", changedAtMs: null }],
    });
    // oscar's watch of pam stands (the last one named only the unknown user: watch her again), then pam leaves.
    await snapshotText(oscar, "w-2", ["pam"]);
    pam.close();
    await quinn.frame(
      (frame) => frame["type"] === "presence" && frame["userId"] === "pam" && frame["status"] === "offline",
      frameDeadlineMs,
    );
    // Both watchers are on the same edge, which writes a change to all its watchers at once: oscar got nothing.
    expect(presenceOf(oscar, "pam")).toEqual([]);
    expect(presenceOf(quinn, "pam")).toEqual(["offline"]);
  });
});
