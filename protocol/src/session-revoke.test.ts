// session.revoke, from an operator to every edge: decodes when valid, and refuses a user id that could
// widen anything or a time that is not an epoch in ms.
import { describe, expect, it } from "vitest";
import { decodeJsonText, sessionRevoke, type SessionRevoke } from "./cell-messages.ts";

describe("session.revoke", () => {
  it("decodes a revocation of one user at a time", () => {
    const value: SessionRevoke = { type: "session.revoke", userId: "alice", revokedAtMs: 1_730_000_000_000 };
    expect(decodeJsonText(sessionRevoke, JSON.stringify(value))).toEqual({ ok: true, value });
  });

  it("refuses a bad user id, a bad time, a missing field and an unknown one", () => {
    for (const value of [
      { type: "session.revoke", userId: "victim.>", revokedAtMs: 1 },
      { type: "session.revoke", userId: "", revokedAtMs: 1 },
      { type: "session.revoke", userId: "alice", revokedAtMs: -1 },
      { type: "session.revoke", userId: "alice", revokedAtMs: 1.5 },
      { type: "session.revoke", userId: "alice" },
      { type: "session.revoke", userId: "alice", revokedAtMs: 1, everyone: true },
    ]) {
      expect(decodeJsonText(sessionRevoke, JSON.stringify(value)).ok, JSON.stringify(value)).toBe(false);
    }
  });
});
