import { describe, expect, it } from "vitest";
import { UnavailableError } from "@cellwire/cluster";
import { cellReply, decode } from "@cellwire/protocol";
import { cellErrorReply, movedReply, overloadedRetryAfterMsDefault, type RequestFailure } from "./cell-error-reply.ts";
import { StoreRowError } from "./store/errors.ts";

describe("cellErrorReply", () => {
  const cases: [RequestFailure, string][] = [
    [{ kind: "refused", refusal: "not_a_member" }, "not_a_member"],
    [{ kind: "refused", refusal: "not_a_group" }, "not_a_group"],
    [{ kind: "refused", refusal: "too_many_members" }, "too_many_members"],
    [{ kind: "refused", refusal: "invalid_peer" }, "invalid_peer"],
    [{ kind: "not_owner", key: "g-x", ownerWorkerId: "a-2" }, "not_owner"],
    [{ kind: "not_owner", key: "g-x", ownerWorkerId: undefined }, "not_owner"],
    [{ kind: "fenced", key: "g-x", epoch: 41 }, "not_owner"],
    [{ kind: "lease_lapsed" }, "not_owner"],
    [{ kind: "overloaded", reason: "key_full" }, "overloaded"],
    [{ kind: "overloaded", reason: "queue_full" }, "overloaded"],
    [{ kind: "overloaded", reason: "migrations_full" }, "overloaded"],
    [{ kind: "overloaded", reason: "sends_full", detail: "the send waited too long for its turn", retryAfterMs: 120 }, "overloaded"],
    [{ kind: "moving", key: "user:bob" }, "moving"],
    [{ kind: "bad_payload", reason: "$.type must be a string" }, "internal"],
    [{ kind: "invalid_field", message: "$.conversationId is not the pair's" }, "invalid_field"],
    [{ kind: "error", error: Object.assign(new Error("connect ECONNREFUSED"), { code: "ECONNREFUSED" }) }, "cell_unavailable"],
    [
      { kind: "error", error: new Error("wrapped", { cause: Object.assign(new Error("terminating"), { code: "57P01" }) }) },
      "cell_unavailable",
    ],
    [{ kind: "error", error: new Error("Query read timeout") }, "cell_unavailable"],
    [
      {
        kind: "error",
        error: new Error("wrapped", { cause: Object.assign(new Error("canceling statement due to lock timeout"), { code: "55P03" }) }),
      },
      "cell_unavailable",
    ],
    [
      { kind: "error", error: Object.assign(new Error("canceling statement due to statement timeout"), { code: "57014" }) },
      "cell_unavailable",
    ],
    [
      { kind: "error", error: Object.assign(new Error("terminating connection due to idle-in-transaction timeout"), { code: "25P03" }) },
      "cell_unavailable",
    ],
    [{ kind: "error", error: new UnavailableError("directory_unavailable", "directory silent") }, "directory_unavailable"],
    [{ kind: "error", error: new StoreRowError("bad row") }, "internal"],
    [{ kind: "error", error: new TypeError("x is undefined") }, "internal"],
    [{ kind: "error", error: "a string was thrown" }, "internal"],
  ];

  it.each(cases)("maps %j to %s, as a reply that decodes", (failure, code) => {
    const reply = cellErrorReply(failure);
    expect(reply.code).toBe(code);
    expect(decode(cellReply, reply).ok).toBe(true);
  });

  it("answers overloaded with the refuser's retry-after, or the default one, and only overloaded carries one", () => {
    expect(cellErrorReply({ kind: "overloaded", reason: "sends_full", detail: "3 sends are waiting", retryAfterMs: 120 })).toEqual({
      type: "cell.error",
      code: "overloaded",
      message: "3 sends are waiting",
      retryAfterMs: 120,
    });
    expect(cellErrorReply({ kind: "overloaded", reason: "key_full" })).toEqual({
      type: "cell.error",
      code: "overloaded",
      message: "too many requests pending for this conversation or mailbox",
      retryAfterMs: overloadedRetryAfterMsDefault,
    });
    expect(overloadedRetryAfterMsDefault).toBeGreaterThan(0);
    for (const failure of cases.map(([failure]) => failure).filter((failure) => failure.kind !== "overloaded")) {
      expect(cellErrorReply(failure)).not.toHaveProperty("retryAfterMs");
    }
  });

  it("answers a tombstone with cell.moved naming the new home, a reply that decodes", () => {
    const reply = movedReply("conversation", "g-x", { cellId: "b", epoch: 7 });
    expect(reply).toEqual({ type: "cell.moved", kind: "conversation", id: "g-x", cellId: "b", epoch: 7 });
    expect(decode(cellReply, reply).ok).toBe(true);
  });

  it("does not leak an unexpected error's message", () => {
    const reply = cellErrorReply({ kind: "error", error: new Error("password=hunter2 in some driver message") });
    expect(reply.message).not.toContain("hunter2");
  });

  it("bounds the reply's message", () => {
    const reply = cellErrorReply({ kind: "invalid_field", message: "x".repeat(5000) });
    expect(reply.message.length).toBeLessThanOrEqual(500);
  });
});
