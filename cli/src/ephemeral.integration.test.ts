// Typing and presence on the real topology: two edges, a cell, NATS, through the SDK. Typing reaches the
// other member on the other edge and lapses there; a non-member is refused; presence follows a user's
// devices on another edge, and goes offline within the stated bound when the edge holding the user's
// only session is killed with SIGKILL (no goodbye). Short presence timings keep the run lean; the bound
// is measured and printed.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { WebSocket } from "ws";
import { CellwireClient, CellwireClientError, type PresenceState, type TypingIndicator, type TypingStopped } from "@cellwire/client";
import { defaultDevKeyDirectory, signDevToken } from "@cellwire/edge/dev-keys";
import { startTestTopology, type TestTopology } from "./test-topology.ts";

const presenceHeartbeatIntervalMs = 250;
const presenceTtlMs = 1000;
const typingExpiresInMs = 1500;
/** A claim lapses at most presenceTtlMs after its edge's last heartbeat, found by a check every presenceTtlMs / 8. */
const presenceExpiryBoundMs = presenceTtlMs + Math.floor(presenceTtlMs / 8);
/** WebSocket and event-loop delays on a loaded two-core machine, on top of the bound. */
const deliverySlackMs = 500;
const waitDeadlineMs = 15_000;

let test: TestTopology;
const clients: CellwireClient[] = [];

type Device = {
  readonly client: CellwireClient;
  readonly typing: { readonly atMs: number; readonly indicator: TypingIndicator }[];
  readonly stopped: { readonly atMs: number; readonly stopped: TypingStopped }[];
  readonly presence: { readonly atMs: number; readonly state: PresenceState }[];
  /** Resolves once `condition` holds, checked after every event of this device. */
  until(condition: () => boolean, what: string): Promise<void>;
};

async function device(userId: string, deviceId: string, edgeIndex: number): Promise<Device> {
  const edge = test.topology.edges[edgeIndex];
  if (edge === undefined) throw new Error(`no edge ${edgeIndex}`);
  const client = new CellwireClient({
    url: edge.webSocketUrl,
    deviceId,
    WebSocket,
    tokenProvider: () => signDevToken(defaultDevKeyDirectory, userId, { deviceId }),
    // Every typing() call goes out: the test paces them itself.
    typingThrottleMs: 0,
  });
  clients.push(client);
  const waiters = new Set<() => void>();
  const notify = (): void => {
    for (const waiter of [...waiters]) waiter();
  };
  const handle: Device = {
    client,
    typing: [],
    stopped: [],
    presence: [],
    until: (condition, what) =>
      new Promise((resolve, reject) => {
        const check = (): void => {
          if (!condition()) return;
          clearTimeout(timer);
          waiters.delete(check);
          resolve();
        };
        const timer = setTimeout(() => {
          waiters.delete(check);
          reject(new Error(`${userId}/${deviceId} waited ${waitDeadlineMs} ms for ${what}`));
        }, waitDeadlineMs);
        waiters.add(check);
        check();
      }),
  };
  client.on("typing", (indicator) => {
    handle.typing.push({ atMs: performance.now(), indicator });
    notify();
  });
  client.on("typingStopped", (stopped) => {
    handle.stopped.push({ atMs: performance.now(), stopped });
    notify();
  });
  client.on("presence", (state) => {
    handle.presence.push({ atMs: performance.now(), state });
    notify();
  });
  await client.connect();
  return handle;
}

async function refusal(promise: Promise<unknown>): Promise<CellwireClientError> {
  const outcome = await promise.then(
    () => undefined,
    (error: unknown) => error,
  );
  if (!(outcome instanceof CellwireClientError)) throw new Error(`expected a refusal, got ${String(outcome)}`);
  return outcome;
}

const statusesOf = (entries: Device["presence"], userId: string): string[] =>
  entries.filter((entry) => entry.state.userId === userId).map((entry) => entry.state.status);

beforeAll(async () => {
  test = await startTestTopology({
    label: "ephem",
    cells: [{ cellId: "a", workerCount: 1 }],
    edgeCount: 2,
    extraEnvironment: {
      EDGE_PRESENCE_HEARTBEAT_INTERVAL_MS: String(presenceHeartbeatIntervalMs),
      EDGE_PRESENCE_TTL_MS: String(presenceTtlMs),
      EDGE_TYPING_EXPIRES_IN_MS: String(typingExpiresInMs),
      // This file is about how presence travels between edges, among users who share no conversation; who
      // may watch whom under the default policy (shared_conversation) is privacy.integration.test.ts's.
      EDGE_PRESENCE_POLICY: "everyone",
    },
  });
});

afterAll(async () => {
  for (const client of clients) client.close();
  await test?.destroy();
});

describe("typing", () => {
  it("reaches the other member on the other edge, both ways, and lapses there by itself", async () => {
    const alice = await device("alice", "phone", 0);
    const bob = await device("bob", "laptop", 1);
    const direct = await alice.client.openDirect("bob");

    // Edge 1 relayed the openDirect reply, so it knows the members; edge 2 asks the cell (cell.members).
    await alice.client.typing(direct.conversationId);
    await bob.until(() => bob.typing.length === 1, "alice's typing");
    expect(bob.typing[0]?.indicator).toMatchObject({
      conversationId: direct.conversationId,
      userId: "alice",
      deviceId: "phone",
      expiresInMs: typingExpiresInMs,
    });
    await bob.client.typing(direct.conversationId);
    await alice.until(() => alice.typing.length === 1, "bob's typing");
    expect(alice.typing[0]?.indicator).toMatchObject({ conversationId: direct.conversationId, userId: "bob", deviceId: "laptop" });

    await bob.until(() => bob.stopped.length === 1, "alice's typing to lapse");
    const shownMs = (bob.stopped[0]?.atMs ?? 0) - (bob.typing[0]?.atMs ?? 0);
    expect(bob.stopped[0]?.stopped).toEqual({ conversationId: direct.conversationId, userId: "alice", deviceId: "phone" });
    expect(shownMs).toBeGreaterThanOrEqual(typingExpiresInMs - 5);
    expect(shownMs).toBeLessThan(typingExpiresInMs + deliverySlackMs);
    // Nobody is shown their own device's typing.
    expect(alice.typing.map((entry) => entry.indicator.userId)).toEqual(["bob"]);
    expect(bob.typing.map((entry) => entry.indicator.userId)).toEqual(["alice"]);
    process.stdout.write(`typing: shown ${shownMs.toFixed(0)} ms for expiresInMs ${typingExpiresInMs}\n`);
  });

  it("refuses a non-member's typing, whether the edge knows the members or asks the cell, and delivers nothing", async () => {
    const alice = await device("alice", "tablet", 0);
    const carol = await device("carol", "phone", 1);
    const group = await alice.client.createGroup("alice and carol", ["carol"]);
    const malloryOnEdge1 = await device("mallory", "phone", 0);
    const malloryOnEdge2 = await device("mallory", "laptop", 1);

    // Edge 1 relayed the createGroup reply: refused from its cached member list.
    expect(await refusal(malloryOnEdge1.client.typing(group.conversationId))).toMatchObject({ code: "not_a_member", retryable: false });
    // Edge 2 never saw the group: the cell refuses mallory's cell.members.
    expect(await refusal(malloryOnEdge2.client.typing(group.conversationId))).toMatchObject({ code: "not_a_member", retryable: false });

    // Alice's typing, sent from edge 1 after mallory's, reaches carol: anything of mallory's would have come first.
    await alice.client.typing(group.conversationId);
    await carol.until(() => carol.typing.length === 1, "alice's typing");
    expect(carol.typing.map((entry) => entry.indicator.userId)).toEqual(["alice"]);

    // Too soon for the same conversation: the edge's rate limit answers.
    expect(await refusal(alice.client.typing(group.conversationId))).toMatchObject({ code: "rate_limited", retryable: true });
  });
});

describe("presence", () => {
  it("follows a user's devices on edge 2 from edge 1: online with the first, still online with one left, offline with none", async () => {
    const watcher = await device("watcher", "desk", 0);
    expect(await watcher.client.watchPresence(["dora", "eve"])).toEqual([
      { userId: "dora", status: "offline", changedAtMs: null },
      { userId: "eve", status: "offline", changedAtMs: null },
    ]);

    const doraPhone = await device("dora", "phone", 1);
    await watcher.until(() => statusesOf(watcher.presence, "dora").length === 1, "dora online");
    expect(statusesOf(watcher.presence, "dora")).toEqual(["online"]);
    const doraLaptop = await device("dora", "laptop", 1);

    doraPhone.client.close();
    // A barrier: eve comes and goes on edge 2 after dora's phone left; edge 2's messages arrive in order,
    // so once edge 1 reports eve offline it has seen whatever edge 2 said about dora before.
    const eve = await device("eve", "phone", 1);
    eve.client.close();
    await watcher.until(() => statusesOf(watcher.presence, "eve").length === 2, "eve online, then offline");
    expect(statusesOf(watcher.presence, "dora")).toEqual(["online"]);
    expect((await watcher.client.watchPresence(["dora"]))[0]).toMatchObject({ userId: "dora", status: "online" });

    doraLaptop.client.close();
    await watcher.until(() => statusesOf(watcher.presence, "dora").length === 2, "dora offline");
    expect(statusesOf(watcher.presence, "dora")).toEqual(["online", "offline"]);
  });

  it("goes offline within the stated bound after SIGKILL of the edge holding the user's only session", async () => {
    const watcher = await device("watcher", "wall", 0);
    await watcher.client.watchPresence(["frank"]);
    await device("frank", "phone", 1);
    await watcher.until(() => statusesOf(watcher.presence, "frank").length === 1, "frank online");
    // Let edge 2 heartbeat at least once, so the claim watched here is one its heartbeats keep alive.
    await new Promise<void>((resolve) => setTimeout(resolve, presenceHeartbeatIntervalMs * 2));

    const killedAtMs = performance.now();
    await test.topology.signal("cellwire-edge-2", "SIGKILL");
    await watcher.until(() => statusesOf(watcher.presence, "frank").length === 2, "frank offline");
    const offlineAfterMs = (watcher.presence.at(-1)?.atMs ?? 0) - killedAtMs;
    process.stdout.write(
      `presence: offline ${offlineAfterMs.toFixed(0)} ms after SIGKILL of edge 2 (stated bound ${presenceExpiryBoundMs} ms = EDGE_PRESENCE_TTL_MS ${presenceTtlMs} + TTL/8; heartbeat every ${presenceHeartbeatIntervalMs} ms)\n`,
    );
    expect(statusesOf(watcher.presence, "frank")).toEqual(["online", "offline"]);
    // Not before the claim could lapse (no goodbye came: it was SIGKILL), and within the bound.
    expect(offlineAfterMs).toBeGreaterThanOrEqual(presenceTtlMs / 2);
    expect(offlineAfterMs).toBeLessThanOrEqual(presenceExpiryBoundMs + deliverySlackMs);
  });
});
