// Token lifetime in process: the expiry sweep closes a session whose token expired (4101), `refresh` moves
// the expiry on the open socket, a refresh naming another user is refused, and a revocation closes the
// user's sessions (4103) and refuses their older tokens. The FakeClock's wall time moves only when told.
import { afterEach, describe, expect, it } from "vitest";
import { closeCodes, protocolVersion } from "@cellwire/protocol";
import { fakeEdge, type FakeEdge } from "../test/edge-fakes.ts";

const edges: FakeEdge[] = [];

function newEdge(): FakeEdge {
  const edge = fakeEdge();
  // Every session of the user resolves to cell a; the mailbox is empty.
  edge.router.answers.set("cell.mailboxPage", async () => ({
    type: "cell.mailboxEvents",
    userId: "alice",
    headSeq: 0,
    floorSeq: 0,
    events: [],
  }));
  edges.push(edge);
  return edge;
}

afterEach(() => {
  const violations = edges.flatMap((edge) => edge.transports.flatMap((transport) => transport.violations));
  for (const edge of edges.splice(0)) edge.core.closeAll();
  expect(violations).toEqual([]);
});

describe("token expiry", () => {
  it("closes a session with 4101 once its token's expiry passes, and leaves the others open", async () => {
    const edge = newEdge();
    const expiresAtMs = edge.clock.wallMs + 5000;
    const expiring = await edge.authenticated("alice", { token: `valid:alice;exp=${expiresAtMs}` });
    const lasting = await edge.authenticated("bob");
    expect(expiring.welcome["tokenExpiresAtMs"]).toBe(expiresAtMs);
    edge.clock.advance(4999);
    expect(edge.core.closeExpiredSessions()).toBe(0);
    expect(expiring.transport.closeCode).toBeUndefined();
    edge.clock.advance(1);
    expect(edge.core.closeExpiredSessions()).toBe(1);
    expect(await expiring.transport.closed()).toBe(closeCodes.token_expired.code);
    expect(lasting.transport.closeCode).toBeUndefined();
    expect(edge.core.sessionCount).toBe(1);
  });
});

describe("refresh", () => {
  it("moves the session's expiry to the new token's and answers refreshed", async () => {
    const edge = newEdge();
    const start = edge.clock.wallMs;
    const { transport } = await edge.authenticated("alice", { token: `valid:alice;exp=${start + 5000}` });
    transport.receiveJson({ type: "refresh", requestId: "r-1", token: `valid:alice;exp=${start + 60_000}` });
    expect(await transport.frame((frame) => frame["requestId"] === "r-1")).toEqual({
      type: "refreshed",
      requestId: "r-1",
      tokenExpiresAtMs: start + 60_000,
    });
    edge.clock.advance(59_999);
    expect(edge.core.closeExpiredSessions()).toBe(0);
    edge.clock.advance(1);
    expect(edge.core.closeExpiredSessions()).toBe(1);
    expect(await transport.closed()).toBe(closeCodes.token_expired.code);
  });

  it("refuses a token of another user or device with token_user_mismatch, and a bad one with token_rejected; the old expiry stays", async () => {
    const edge = newEdge();
    const start = edge.clock.wallMs;
    const { transport } = await edge.authenticated("alice", { token: `valid:alice:phone;exp=${start + 5000}` });
    transport.receiveJson({ type: "refresh", requestId: "r-1", token: `valid:mallory;exp=${start + 60_000}` });
    expect(await transport.frame((frame) => frame["requestId"] === "r-1")).toMatchObject({
      type: "error",
      code: "token_user_mismatch",
      retryable: false,
    });
    edge.clock.advance(1000);
    transport.receiveJson({ type: "refresh", requestId: "r-2", token: `valid:alice:laptop;exp=${start + 60_000}` });
    expect(await transport.frame((frame) => frame["requestId"] === "r-2")).toMatchObject({ type: "error", code: "token_user_mismatch" });
    edge.clock.advance(1000);
    transport.receiveJson({ type: "refresh", requestId: "r-3", token: "forged" });
    expect(await transport.frame((frame) => frame["requestId"] === "r-3")).toMatchObject({
      type: "error",
      code: "token_rejected",
      retryable: false,
    });
    edge.clock.advance(1000);
    transport.receiveJson({ type: "refresh", requestId: "r-4", token: "expired" });
    expect(await transport.frame((frame) => frame["requestId"] === "r-4")).toMatchObject({ type: "error", code: "token_rejected" });
    expect(transport.closeCode).toBeUndefined();
    edge.clock.advance(2000);
    expect(edge.core.closeExpiredSessions()).toBe(1);
    expect(await transport.closed()).toBe(closeCodes.token_expired.code);
  });

  it("answers rate_limited to a refresh within a second of the previous one, without verifying it", async () => {
    const edge = newEdge();
    const start = edge.clock.wallMs;
    const { transport } = await edge.authenticated("alice", { token: `valid:alice;exp=${start + 5000}` });
    transport.receiveJson({ type: "refresh", requestId: "r-1", token: `valid:alice;exp=${start + 60_000}` });
    transport.receiveJson({ type: "refresh", requestId: "r-2", token: `valid:alice;exp=${start + 120_000}` });
    expect(await transport.frame((frame) => frame["requestId"] === "r-2")).toMatchObject({
      type: "error",
      code: "rate_limited",
      retryable: true,
    });
    expect(await transport.frame((frame) => frame["requestId"] === "r-1")).toMatchObject({
      type: "refreshed",
      tokenExpiresAtMs: start + 60_000,
    });
    expect(edge.verifier.tokens.filter((token) => token.includes("120000"))).toEqual([]);
    edge.clock.advance(999);
    transport.receiveJson({ type: "refresh", requestId: "r-3", token: `valid:alice;exp=${start + 120_000}` });
    expect(await transport.frame((frame) => frame["requestId"] === "r-3")).toMatchObject({ type: "error", code: "rate_limited" });
    edge.clock.advance(1);
    transport.receiveJson({ type: "refresh", requestId: "r-4", token: `valid:alice;exp=${start + 120_000}` });
    expect(await transport.frame((frame) => frame["requestId"] === "r-4")).toMatchObject({
      type: "refreshed",
      tokenExpiresAtMs: start + 120_000,
    });
  });
});

describe("revocation", () => {
  it("closes every session of the user with 4103 and refuses their tokens issued before it, at hello and at refresh", async () => {
    const edge = newEdge();
    const revokedAtMs = edge.clock.wallMs;
    const phone = await edge.authenticated("alice", { token: `valid:alice:phone;iat=${revokedAtMs - 60_000}` });
    const laptop = await edge.authenticated("alice", { token: `valid:alice:laptop;iat=${revokedAtMs - 60_000}` });
    const bob = await edge.authenticated("bob");
    expect(edge.core.revoke("alice", revokedAtMs)).toBe(2);
    expect(await phone.transport.closed()).toBe(closeCodes.token_revoked.code);
    expect(await laptop.transport.closed()).toBe(closeCodes.token_revoked.code);
    expect(bob.transport.closeCode).toBeUndefined();

    const { transport: stale } = edge.connect();
    stale.receiveJson({ type: "hello", protocolVersion, token: `valid:alice;iat=${revokedAtMs - 1000}` });
    expect(await stale.closed()).toBe(closeCodes.token_revoked.code);
    const { transport: noIssuedAt } = edge.connect();
    noIssuedAt.receiveJson({ type: "hello", protocolVersion, token: "valid:alice" });
    expect(await noIssuedAt.closed()).toBe(closeCodes.token_revoked.code);

    const fresh = await edge.authenticated("alice", { token: `valid:alice;iat=${revokedAtMs + 1000}` });
    fresh.transport.receiveJson({ type: "refresh", requestId: "r-1", token: `valid:alice;iat=${revokedAtMs - 1000}` });
    expect(await fresh.transport.frame((frame) => frame["requestId"] === "r-1")).toMatchObject({ type: "error", code: "token_rejected" });
    expect(fresh.transport.closeCode).toBeUndefined();
  });
});
