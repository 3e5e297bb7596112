// Token lifetime on real processes (two dev-mode edges, one cell, NATS, Redis, Postgres), with short-lived
// dev tokens and no clock tolerance: a session is closed with 4101 once its token's exp passes, a
// refresh on the open socket moves the expiry, a refresh naming another user is refused, `cellwire
// revoke` closes the user's sessions on both edges and refuses their older tokens, and the SDK
// refreshes by itself before expiry without reconnecting.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { WebSocket } from "ws";
import { CellwireClient } from "@cellwire/client";
import { defaultDevKeyDirectory, signDevToken } from "@cellwire/edge/dev-keys";
import { closeCodes, protocolVersion } from "@cellwire/protocol";
import { RawSocket } from "../test/raw-socket.ts";
import { runCli } from "../test/run-cli.ts";
import { startTestTopology, type TestTopology } from "./test-topology.ts";

let test: TestTopology;
const clients: CellwireClient[] = [];
const sockets: RawSocket[] = [];

function edgeUrl(index: number): string {
  const edge = test.topology.edges[index];
  if (edge === undefined) throw new Error(`no edge ${index}`);
  return edge.webSocketUrl;
}

/** A raw session on edge `edgeIndex`, welcomed with `token`. */
async function session(edgeIndex: number, token: string): Promise<{ socket: RawSocket; welcome: Record<string, unknown> }> {
  const socket = await RawSocket.open(edgeUrl(edgeIndex));
  sockets.push(socket);
  socket.send(JSON.stringify({ type: "hello", protocolVersion, token }));
  const welcome = await socket.frame((frame) => frame["type"] === "welcome", 15_000);
  return { socket, welcome };
}

function tokenFor(userId: string, expiresInSeconds: number): Promise<string> {
  return signDevToken(defaultDevKeyDirectory, userId, { expiresInSeconds });
}

/** Waits until `condition` holds, polling, up to `deadlineMs`. */
async function until(condition: () => boolean, deadlineMs: number, what: string): Promise<void> {
  const startedAtMs = Date.now();
  while (!condition()) {
    if (Date.now() - startedAtMs > deadlineMs) throw new Error(`timed out after ${deadlineMs} ms waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

beforeAll(async () => {
  // No clock tolerance: a dev token of N seconds expires N seconds (to the second) after it was signed.
  test = await startTestTopology({
    label: "token",
    cells: [{ cellId: "a", workerCount: 1 }],
    extraEnvironment: { EDGE_CLOCK_TOLERANCE_MS: "0" },
  });
});

afterAll(async () => {
  for (const client of clients) client.close();
  for (const socket of sockets) socket.close();
  await test?.destroy();
});

describe("token lifetime", () => {
  it("closes a session with 4101 once its token's exp has passed, not before", async () => {
    const { socket, welcome } = await session(0, await tokenFor("tl-expiring", 2));
    const tokenExpiresAtMs = welcome["tokenExpiresAtMs"];
    expect(typeof tokenExpiresAtMs).toBe("number");
    expect(await socket.closed(10_000)).toBe(closeCodes.token_expired.code);
    expect(Date.now()).toBeGreaterThanOrEqual(tokenExpiresAtMs as number);
  });

  it("keeps a session open past its first token's exp after a refresh, and refuses a refresh for another user", async () => {
    const { socket, welcome } = await session(1, await tokenFor("tl-refresher", 2));
    const firstExpiresAtMs = welcome["tokenExpiresAtMs"] as number;
    socket.send(JSON.stringify({ type: "refresh", requestId: "k-1", token: await tokenFor("tl-mallory", 60) }));
    expect(await socket.frame((frame) => frame["requestId"] === "k-1")).toMatchObject({
      type: "error",
      code: "token_user_mismatch",
      retryable: false,
    });
    // The refused refresh counted (each costs a signature check): the next one within a second is refused
    // with the wait, after which it goes through.
    const token = await tokenFor("tl-refresher", 60);
    socket.send(JSON.stringify({ type: "refresh", requestId: "k-2", token }));
    const tooSoon = await socket.frame((frame) => frame["requestId"] === "k-2");
    expect(tooSoon).toMatchObject({ type: "error", code: "rate_limited", retryable: true });
    const retryAfterMs = tooSoon["retryAfterMs"];
    expect(typeof retryAfterMs === "number" && retryAfterMs > 0 && retryAfterMs <= 1000).toBe(true);
    await new Promise((resolve) => setTimeout(resolve, retryAfterMs as number));
    socket.send(JSON.stringify({ type: "refresh", requestId: "k-3", token }));
    const refreshed = await socket.frame((frame) => frame["requestId"] === "k-3");
    expect(refreshed).toMatchObject({ type: "refreshed" });
    expect(refreshed["tokenExpiresAtMs"] as number).toBeGreaterThan(firstExpiresAtMs + 50_000);
    // Two sweeps past the first token's expiry, the session still answers.
    await until(() => Date.now() > firstExpiresAtMs + 2500, 10_000, "the first token's expiry to pass");
    socket.send(JSON.stringify({ type: "ping", requestId: "p-1" }));
    expect(await socket.frame((frame) => frame["requestId"] === "p-1")).toEqual({ type: "pong", requestId: "p-1" });
    expect(socket.closeCode).toBeUndefined();
  });

  it("revokes a user's sessions on both edges with 4103 (cellwire revoke) and refuses the user's older tokens", async () => {
    const oldToken = await tokenFor("tl-revokee", 600);
    const onFirst = await session(0, oldToken);
    const onSecond = await session(1, oldToken);
    const bystander = await session(0, await tokenFor("tl-bystander", 600));
    const environment = { CELLWIRE_NAMESPACE: test.namespace, ...test.natsEnvironment("admin") };
    const revoked = await runCli(["revoke", "tl-revokee", "--json"], undefined, environment).done;
    expect(revoked.status, revoked.stderr).toBe(0);
    const { revokedAtMs } = JSON.parse(revoked.stdout) as { revokedAtMs: number };
    expect(await onFirst.socket.closed(10_000)).toBe(closeCodes.token_revoked.code);
    expect(await onSecond.socket.closed(10_000)).toBe(closeCodes.token_revoked.code);
    expect(bystander.socket.closeCode).toBeUndefined();

    const again = await RawSocket.open(edgeUrl(1));
    sockets.push(again);
    again.send(JSON.stringify({ type: "hello", protocolVersion, token: oldToken }));
    expect(await again.closed(10_000)).toBe(closeCodes.token_revoked.code);
    // A token issued after the revocation (iat has whole seconds) opens a session again.
    await until(() => Date.now() >= (Math.floor(revokedAtMs / 1000) + 1) * 1000, 5000, "the second after the revocation");
    const { welcome } = await session(0, await tokenFor("tl-revokee", 600));
    expect(welcome).toMatchObject({ type: "welcome", userId: "tl-revokee" });
  });

  it("the SDK refreshes its token on the open socket before expiry, without reconnecting", async () => {
    const reasons: string[] = [];
    const client = new CellwireClient({
      url: edgeUrl(0),
      WebSocket,
      tokenProvider: async ({ reason }) => {
        reasons.push(reason);
        return tokenFor("tl-sdk", 3);
      },
    });
    clients.push(client);
    let welcomes = 0;
    client.on("welcome", () => welcomes++);
    const welcome = await client.connect();
    const firstExpiresAtMs = welcome.tokenExpiresAtMs;
    expect(typeof firstExpiresAtMs).toBe("number");
    // Two refreshes, and well past the first token's expiry: the session is the first one still.
    await until(
      () => reasons.filter((reason) => reason === "refresh").length >= 2 && Date.now() > (firstExpiresAtMs ?? 0) + 1500,
      20_000,
      "two refreshes past the first expiry",
    );
    expect(client.state).toBe("open");
    expect(welcomes).toBe(1);
    expect(reasons[0]).toBe("connect");
  });
});
