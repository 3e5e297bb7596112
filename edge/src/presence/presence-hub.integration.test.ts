// NatsPresenceHub against the real NATS: claims cross between hubs (heartbeats in batches of
// presenceHeartbeatUsersMax), a hub whose connection dies without a goodbye has its users expire within
// the stated bound, and a stopping hub's goodbye ends its claims at once.
import { randomBytes } from "node:crypto";
import { afterAll, describe, expect, it } from "vitest";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { decodeMessage, systemClock } from "@cellwire/cluster";
import { presenceHeartbeatUsersMax, presenceMessage, presenceSubject, type PresenceMessage } from "@cellwire/protocol";
import { NatsPresenceHub, presenceExpiryBoundMs } from "./presence-hub.ts";
import type { PresenceChange } from "./presence-table.ts";
import { RecordingLogger } from "../../test/edge-fakes.ts";

const namespace = `tpres${Date.now().toString(36)}${randomBytes(3).toString("hex")}`.slice(0, 24);
const heartbeatIntervalMs = 100;
const claimTtlMs = 400;
const waitDeadlineMs = 10_000;
const connections: NatsConnection[] = [];
const hubs: NatsPresenceHub[] = [];

afterAll(async () => {
  for (const hub of hubs) hub.stop();
  await Promise.all(connections.map((connection) => connection.close().catch(() => undefined)));
});

async function hub(
  edgeInstanceId: string,
): Promise<{ hub: NatsPresenceHub; connection: NatsConnection; changes: PresenceChange[]; logger: RecordingLogger }> {
  const connection = await connect({ servers: ["127.0.0.1:4222"] });
  connections.push(connection);
  const logger = new RecordingLogger();
  const presence = new NatsPresenceHub(
    connection,
    { namespace, edgeInstanceId, heartbeatIntervalMs, claimTtlMs, remoteClaimsMax: 100_000, offlineUsersRememberedMax: 100_000 },
    systemClock,
    logger,
  );
  hubs.push(presence);
  const changes: PresenceChange[] = [];
  presence.onChange((change) => changes.push(change));
  await presence.start();
  return { hub: presence, connection, changes, logger };
}

async function until(condition: () => boolean, what: string): Promise<void> {
  const deadline = performance.now() + waitDeadlineMs;
  while (!condition()) {
    if (performance.now() > deadline) throw new Error(`waited ${waitDeadlineMs} ms for ${what}`);
    await new Promise<void>((resolve) => setTimeout(resolve, 10));
  }
}

const statusCount = (changes: readonly PresenceChange[], status: "online" | "offline"): number =>
  changes.filter((change) => change.status === status).length;

describe("NatsPresenceHub", () => {
  it("claims users across hubs, heartbeats them in batches, and lets them lapse within the bound when a hub dies", async () => {
    const watcher = await hub("watcher");
    const dying = await hub("dying");
    const spy = await connect({ servers: ["127.0.0.1:4222"] });
    connections.push(spy);
    const heartbeatSizes: number[] = [];
    spy.subscribe(presenceSubject(namespace), {
      callback: (_error, received) => {
        const decoded = decodeMessage(presenceMessage, received.data);
        const message: PresenceMessage | undefined = decoded.ok ? decoded.value : undefined;
        if (message?.type === "presence.heartbeat" && message.edgeInstanceId === "dying") heartbeatSizes.push(message.userIds.length);
      },
    });
    await spy.flush();

    const userCount = 2 * presenceHeartbeatUsersMax + 5;
    for (let index = 0; index < userCount; index++) dying.hub.sessionOpened(`user${index}`);
    // A second session of one user changes nothing elsewhere.
    dying.hub.sessionOpened("user0");
    await until(() => statusCount(watcher.changes, "online") === userCount, "every user online at the watcher");
    expect(await watcher.hub.states(["user0", "user2004", "nobody"])).toEqual([
      expect.objectContaining({ userId: "user0", status: "online" }),
      expect.objectContaining({ userId: "user2004", status: "online" }),
      { userId: "nobody", status: "offline", changedAtMs: null },
    ]);
    // Heartbeats keep them online well past one TTL, in messages of at most presenceHeartbeatUsersMax.
    await new Promise<void>((resolve) => setTimeout(resolve, claimTtlMs * 2));
    expect(statusCount(watcher.changes, "offline")).toBe(0);
    expect(heartbeatSizes.slice(0, 3).sort((a, b) => a - b)).toEqual([5, presenceHeartbeatUsersMax, presenceHeartbeatUsersMax]);

    // The dying hub's connection goes without a goodbye, as with SIGKILL.
    const diedAtMs = performance.now();
    await dying.connection.close();
    await until(() => statusCount(watcher.changes, "offline") === userCount, "every user offline at the watcher");
    const elapsedMs = performance.now() - diedAtMs;
    expect(elapsedMs).toBeGreaterThanOrEqual(claimTtlMs - heartbeatIntervalMs - 20);
    expect(elapsedMs).toBeLessThanOrEqual(presenceExpiryBoundMs(claimTtlMs) + 300);
  });

  it("ends a stopping hub's claims at once with its goodbye, and a user's last session ends its claim", async () => {
    const watcher = await hub("watcher-2");
    const leaving = await hub("leaving");
    leaving.hub.sessionOpened("alice");
    leaving.hub.sessionOpened("bob");
    leaving.hub.sessionOpened("bob");
    await until(() => statusCount(watcher.changes, "online") === 2, "alice and bob online");
    leaving.hub.sessionClosed("bob");
    leaving.hub.sessionClosed("bob");
    await until(() => statusCount(watcher.changes, "offline") === 1, "bob offline");
    const stoppedAtMs = performance.now();
    leaving.hub.stop();
    await until(() => statusCount(watcher.changes, "offline") === 2, "alice offline");
    expect(performance.now() - stoppedAtMs).toBeLessThan(claimTtlMs / 2);
    expect(watcher.changes.map((change) => `${change.userId}:${change.status}`)).toEqual([
      "alice:online",
      "bob:online",
      "bob:offline",
      "alice:offline",
    ]);
    // Nothing is published after the goodbye.
    leaving.hub.sessionOpened("carol");
    await new Promise<void>((resolve) => setTimeout(resolve, heartbeatIntervalMs * 2));
    expect(watcher.changes.some((change) => change.userId === "carol")).toBe(false);
  });

  it("claims the users who came online in one turn together, and publishes only each user's latest status", async () => {
    const watcher = await hub("watcher-3");
    const burst = await hub("burst");
    const spy = await connect({ servers: ["127.0.0.1:4222"] });
    connections.push(spy);
    const messages: PresenceMessage[] = [];
    spy.subscribe(presenceSubject(namespace), {
      callback: (_error, received) => {
        const decoded = decodeMessage(presenceMessage, received.data);
        if (decoded.ok && decoded.value.edgeInstanceId === "burst") messages.push(decoded.value);
      },
    });
    await spy.flush();
    // Published before the hub's first periodic heartbeat could carry any of them.
    const userCount = presenceHeartbeatUsersMax + 200;
    for (let index = 0; index < userCount; index++) burst.hub.sessionOpened(`wave${index}`);
    // Online and offline again within the turn: only the offline goes out, so nobody sees it online.
    burst.hub.sessionOpened("blink");
    burst.hub.sessionClosed("blink");
    await until(() => statusCount(watcher.changes, "online") === userCount, "the wave online at the watcher");
    // The spy reads on a connection of its own: what reached the watcher may not have reached it yet.
    await until(() => messages.length >= 3, "the burst's first three messages at the spy");
    const first = messages
      .slice(0, 3)
      .map((message) =>
        message.type === "presence.heartbeat"
          ? `heartbeat ${message.userIds.length}`
          : message.type === "presence.change"
            ? `${message.userId} ${message.status}`
            : message.type,
      );
    expect(first.sort()).toEqual(["blink offline", "heartbeat 1000", "heartbeat 200"]);
    expect(watcher.changes.some((change) => change.userId === "blink")).toBe(false);
    // The last session of a user closing is published at once (within the turn) as presence.change offline.
    burst.hub.sessionClosed("wave7");
    await until(() => watcher.changes.some((change) => change.userId === "wave7" && change.status === "offline"), "wave7 offline");
    expect(
      messages.some((message) => message.type === "presence.change" && message.userId === "wave7" && message.status === "offline"),
    ).toBe(true);
  });

  it("answers states only once warm: at least one heartbeat interval after it started", async () => {
    const startedAtMs = performance.now();
    const fresh = await hub("fresh");
    await fresh.hub.states(["anyone"]);
    expect(performance.now() - startedAtMs).toBeGreaterThanOrEqual(heartbeatIntervalMs);
  });
});
