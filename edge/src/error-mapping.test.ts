import { describe, expect, it } from "vitest";
import { RemoteError, UnavailableError } from "@cellwire/cluster";
import { decodeServerFrame } from "@cellwire/protocol";
import { clientErrorCode, errorFrame, errorFrameFor, notAMemberFrame } from "./error-mapping.ts";

describe("clientErrorCode", () => {
  it("maps the migration codes: moving is retryable cell_unavailable, entry_changed a server bug", () => {
    expect(clientErrorCode("moving")).toBe("cell_unavailable");
    expect(clientErrorCode("entry_changed")).toBe("internal");
  });

  it("gives a client a retryable cell_unavailable for a key that kept moving, with the documented text", () => {
    const logged: string[] = [];
    const frame = errorFrameFor(new UnavailableError("cell_unavailable", "conversation g-1 kept moving"), "r-1", (message) =>
      logged.push(message),
    );
    expect(frame).toEqual({
      type: "error",
      code: "cell_unavailable",
      retryable: true,
      message: "No worker of the owning cell answered in time.",
      requestId: "r-1",
    });
    expect(logged).toEqual([]);
  });

  it("passes overloaded through to clients with the cell's message, and not_a_member with its one fixed text, unlogged", () => {
    const logged: string[] = [];
    expect(clientErrorCode("overloaded")).toBe("overloaded");
    expect(errorFrameFor(new RemoteError("overloaded", "the send queue is full"), "r-3", (message) => logged.push(message))).toEqual({
      type: "error",
      code: "overloaded",
      message: "the send queue is full",
      retryable: true,
      requestId: "r-3",
    });
    // Whoever refused (the edge for an id the directory does not know, the cell for one it homes) and
    // whatever they said, a client reads the same bytes: its text cannot tell the two apart.
    expect(errorFrameFor(new RemoteError("not_a_member", "no conversation g-1"), undefined, (message) => logged.push(message))).toEqual({
      type: "error",
      code: "not_a_member",
      message: "The conversation does not exist or the user is not one of its members.",
      retryable: false,
    });
    expect(JSON.stringify(errorFrame("not_a_member", "the cell's own words", "r-4"))).toBe(JSON.stringify(notAMemberFrame("r-4")));
    expect(logged).toEqual([]);
  });

  it("logs entry_changed and shows only internal error", () => {
    const logged: string[] = [];
    const frame = errorFrameFor(new RemoteError("entry_changed", "expected epoch 3"), "r-2", (message) => logged.push(message));
    expect(frame).toMatchObject({ code: "internal", message: "internal error", retryable: true });
    expect(logged).toHaveLength(1);
  });
});

describe("errorFrame", () => {
  it("cuts a message too long for the SDK's decoder (a decode failure naming a 5,000-character field), so the client can still read the error", () => {
    const frame = errorFrame("invalid_field", `$.${"k".repeat(5000)} is not a known field`, "r-4");
    const decoded = decodeServerFrame(JSON.stringify(frame));
    expect(decoded.ok).toBe(true);
    expect(frame.message.startsWith("$.kkk")).toBe(true);
    expect(frame).toMatchObject({ code: "invalid_field", requestId: "r-4", retryable: false });
  });
});
