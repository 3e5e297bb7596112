import { describe, expect, it } from "vitest";
import { timerDelayMsMax, tokenRefreshDelayMs } from "./token-refresh.ts";

describe("tokenRefreshDelayMs", () => {
  it("refreshes between 70% and 80% of the time left, by the jitter", () => {
    expect(tokenRefreshDelayMs(1000, 11_000, 0)).toBe(8000);
    expect(tokenRefreshDelayMs(1000, 11_000, 1)).toBe(7000);
    expect(tokenRefreshDelayMs(1000, 11_000, 0.5)).toBe(7500);
  });

  it("refreshes at once when the time is up, and schedules nothing without an expiry or beyond a timer's reach", () => {
    expect(tokenRefreshDelayMs(5000, 5000, 0)).toBe(0);
    expect(tokenRefreshDelayMs(5000, 4000, 0)).toBe(0);
    expect(tokenRefreshDelayMs(5000, undefined, 0)).toBeUndefined();
    expect(tokenRefreshDelayMs(0, timerDelayMsMax + 1, 0)).toBeUndefined();
    expect(tokenRefreshDelayMs(0, Number.MAX_SAFE_INTEGER, 0)).toBeUndefined();
  });
});
