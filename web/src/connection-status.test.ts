import { describe, expect, it } from "vitest";
import { statusText } from "./connection-status.ts";

describe("statusText", () => {
  it.each([
    ["idle", false, "disconnected"],
    ["connecting", false, "connecting"],
    ["authenticating", false, "connecting"],
    ["open", false, "loading"],
    ["open", true, "connected"],
    ["waiting_to_reconnect", true, "reconnecting"],
    ["closed", true, "disconnected"],
  ] as const)("%s (conversation ready: %s) reads %s", (state, ready, text) => {
    expect(statusText(state, ready)).toBe(text);
  });
});
