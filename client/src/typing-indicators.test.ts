import { describe, expect, it } from "vitest";
import { ManualClock } from "../test/manual-clock.ts";
import { TypingIndicators, type TypingIndicator, type TypingStopped } from "./typing-indicators.ts";

const conversationId = "g-AAAAAAAAAAAAAAAAAAAAAA";

function setup(indicatorsMax?: number) {
  const clock = new ManualClock(0);
  const started: TypingIndicator[] = [];
  const stopped: TypingStopped[] = [];
  const indicators = new TypingIndicators(
    clock,
    (indicator) => started.push(indicator),
    (entry) => stopped.push(entry),
    indicatorsMax,
  );
  return { clock, started, stopped, indicators };
}

describe("TypingIndicators", () => {
  it("emits an indicator with its expiry and stops it expiresInMs later, not before", () => {
    const { clock, started, stopped, indicators } = setup();
    clock.advanceBy(100);
    indicators.received({ conversationId, userId: "bob", deviceId: "phone", expiresInMs: 5000 });
    expect(started).toEqual([{ conversationId, userId: "bob", deviceId: "phone", expiresInMs: 5000, expiresAtMs: 5100 }]);
    clock.advanceBy(4999);
    expect(stopped).toEqual([]);
    clock.advanceBy(1);
    expect(stopped).toEqual([{ conversationId, userId: "bob", deviceId: "phone" }]);
    expect(indicators.activeCount).toBe(0);
  });

  it("keeps a refreshed indicator going until the refresh lapses, with one stop", () => {
    const { clock, started, stopped, indicators } = setup();
    indicators.received({ conversationId, userId: "bob", deviceId: "phone", expiresInMs: 5000 });
    clock.advanceBy(3000);
    indicators.received({ conversationId, userId: "bob", deviceId: "phone", expiresInMs: 5000 });
    expect(started.map((entry) => entry.expiresAtMs)).toEqual([5000, 8000]);
    clock.advanceBy(4999);
    expect(stopped).toEqual([]);
    clock.advanceBy(1);
    expect(stopped).toHaveLength(1);
    clock.advanceBy(10_000);
    expect(stopped).toHaveLength(1);
  });

  it("keeps one indicator per conversation, user and device", () => {
    const { clock, stopped, indicators } = setup();
    indicators.received({ conversationId, userId: "bob", deviceId: "phone", expiresInMs: 1000 });
    indicators.received({ conversationId, userId: "bob", deviceId: "laptop", expiresInMs: 3000 });
    indicators.received({ conversationId: "d-BBBBBBBBBBBBBBBBBBBBBB", userId: "bob", deviceId: "phone", expiresInMs: 2000 });
    expect(indicators.activeCount).toBe(3);
    clock.advanceBy(3000);
    expect(stopped.map((entry) => `${entry.conversationId}/${entry.deviceId}`)).toEqual([
      `${conversationId}/phone`,
      "d-BBBBBBBBBBBBBBBBBBBBBB/phone",
      `${conversationId}/laptop`,
    ]);
  });

  it("stops the oldest indicator early past indicatorsMax, and stops all on stopAll", () => {
    const { clock, stopped, indicators } = setup(2);
    indicators.received({ conversationId, userId: "a", deviceId: "d", expiresInMs: 5000 });
    indicators.received({ conversationId, userId: "b", deviceId: "d", expiresInMs: 5000 });
    indicators.received({ conversationId, userId: "c", deviceId: "d", expiresInMs: 5000 });
    expect(stopped.map((entry) => entry.userId)).toEqual(["a"]);
    indicators.stopAll();
    expect(stopped.map((entry) => entry.userId)).toEqual(["a", "b", "c"]);
    expect(indicators.activeCount).toBe(0);
    expect(clock.timerCount).toBe(0);
  });
});
