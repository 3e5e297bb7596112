import { describe, expect, it } from "vitest";
import { CellwireClientError } from "./errors.ts";

describe("CellwireClientError", () => {
  it("carries code, retryable and cause, and is an Error", () => {
    const cause = new Error("socket gone");
    const error = new CellwireClientError("timeout", "no reply", { retryable: true, cause });
    expect(error).toBeInstanceOf(Error);
    expect(error).toMatchObject({ name: "CellwireClientError", code: "timeout", message: "no reply", retryable: true, cause });
    expect(new CellwireClientError("not_a_member", "no", { retryable: false }).cause).toBeUndefined();
  });

  it("carries the edge's retryAfterMs when it named one", () => {
    expect(new CellwireClientError("overloaded", "busy", { retryable: true, retryAfterMs: 750 }).retryAfterMs).toBe(750);
    expect(new CellwireClientError("overloaded", "busy", { retryable: true }).retryAfterMs).toBeUndefined();
  });
});
