import { describe, expect, it } from "vitest";
import { RevocationList } from "./revocation-list.ts";

const revokedAtMs = 1_800_000_000_000;

describe("RevocationList", () => {
  it("refuses the user's tokens issued at or before the revocation, and those without iat; accepts later ones and other users'", () => {
    const list = new RevocationList({ revocationsMax: 10, retentionMs: 60_000 });
    expect(list.revoke("alice", revokedAtMs, revokedAtMs)).toBeUndefined();
    expect(list.refuses("alice", revokedAtMs - 1000, revokedAtMs + 1)).toBe(true);
    expect(list.refuses("alice", revokedAtMs, revokedAtMs + 1)).toBe(true);
    expect(list.refuses("alice", undefined, revokedAtMs + 1)).toBe(true);
    expect(list.refuses("alice", revokedAtMs + 1000, revokedAtMs + 1)).toBe(false);
    expect(list.refuses("bob", revokedAtMs - 1000, revokedAtMs + 1)).toBe(false);
  });

  it("forgets a revocation after the retention", () => {
    const list = new RevocationList({ revocationsMax: 10, retentionMs: 60_000 });
    list.revoke("alice", revokedAtMs, revokedAtMs);
    expect(list.refuses("alice", revokedAtMs - 1000, revokedAtMs + 59_999)).toBe(true);
    expect(list.refuses("alice", revokedAtMs - 1000, revokedAtMs + 60_000)).toBe(false);
    expect(list.size).toBe(0);
  });

  it("holds at most revocationsMax users, forgetting the oldest revocation and saying whose", () => {
    const list = new RevocationList({ revocationsMax: 2, retentionMs: 60_000 });
    list.revoke("alice", revokedAtMs, revokedAtMs);
    list.revoke("bob", revokedAtMs + 1, revokedAtMs + 1);
    expect(list.revoke("carol", revokedAtMs + 2, revokedAtMs + 2)).toBe("alice");
    expect(list.size).toBe(2);
    expect(list.refuses("alice", revokedAtMs - 1000, revokedAtMs + 3)).toBe(false);
    expect(list.refuses("bob", revokedAtMs - 1000, revokedAtMs + 3)).toBe(true);
    expect(list.refuses("carol", revokedAtMs - 1000, revokedAtMs + 3)).toBe(true);
  });

  it("keeps the later of two revocations of one user, and drops expired ones when a new one arrives", () => {
    const list = new RevocationList({ revocationsMax: 10, retentionMs: 60_000 });
    list.revoke("alice", revokedAtMs + 5000, revokedAtMs + 5000);
    list.revoke("alice", revokedAtMs, revokedAtMs + 5000);
    expect(list.refuses("alice", revokedAtMs + 4000, revokedAtMs + 6000)).toBe(true);
    list.revoke("bob", revokedAtMs + 70_000, revokedAtMs + 70_000);
    expect(list.size).toBe(1);
  });
});
