import { describe, expect, it } from "vitest";
import { retryAfterMsMax } from "@cellwire/protocol";
import {
  assertRateLimitSettings,
  rateLimitedKindOf,
  SessionRateLimits,
  UserRateLimits,
  type RateLimitSettings,
} from "./request-rate-limits.ts";

const settings: RateLimitSettings = {
  perSession: {
    send: { perSecond: 20, burst: 40 },
    typing: { perSecond: 4, burst: 8 },
    history: { perSecond: 10, burst: 3 },
    conversationChange: { perSecond: 5, burst: 2 },
    refresh: { perSecond: 1, burst: 1 },
  },
  perUser: {
    send: { perSecond: 30, burst: 60 },
    typing: { perSecond: 8, burst: 16 },
    history: { perSecond: 20, burst: 100 },
    conversationChange: { perSecond: 10, burst: 100 },
    refresh: { perSecond: 10, burst: 20 },
  },
  fanOutPerUser: { perSecond: 1000, burst: 2000 },
};

function admitted(limits: SessionRateLimits, kind: Parameters<SessionRateLimits["admit"]>[0], count: number, nowMs: number): number {
  let passed = 0;
  for (let request = 0; request < count; request++) if (limits.admit(kind, nowMs) === 0) passed++;
  return passed;
}

describe("SessionRateLimits", () => {
  it("lets a session's burst through, then refuses with the wait until its next token", () => {
    const limits = new SessionRateLimits(new UserRateLimits(settings));
    expect(admitted(limits, "send", 40, 0)).toBe(40);
    expect(limits.admit("send", 0)).toBe(50);
    expect(limits.admit("send", 50)).toBe(0);
  });

  it("keeps the kinds apart: a session out of history tokens may still send", () => {
    const limits = new SessionRateLimits(new UserRateLimits(settings));
    expect(admitted(limits, "history", 5, 0)).toBe(3);
    expect(limits.admit("history", 0)).toBe(100);
    expect(limits.admit("send", 0)).toBe(0);
    expect(admitted(limits, "conversationChange", 5, 0)).toBe(2);
    expect(limits.admit("conversationChange", 0)).toBe(200);
  });

  it("shares the user's bucket between the user's sessions: two sessions together get the user's burst", () => {
    const user = new UserRateLimits(settings);
    const laptop = new SessionRateLimits(user);
    const phone = new SessionRateLimits(user);
    expect(admitted(laptop, "send", 40, 0)).toBe(40);
    // The phone has 40 of its own, the user 20 left.
    expect(admitted(phone, "send", 40, 0)).toBe(20);
    expect(phone.admit("send", 0)).toBe(34);
    // Another user's session is untouched.
    expect(admitted(new SessionRateLimits(new UserRateLimits(settings)), "send", 40, 0)).toBe(40);
  });

  it("a refusal by the user's bucket takes nothing from the session's", () => {
    const user = new UserRateLimits(settings);
    const laptop = new SessionRateLimits(user);
    const phone = new SessionRateLimits(user);
    admitted(laptop, "send", 40, 0);
    admitted(phone, "send", 20, 0);
    for (let refused = 0; refused < 100; refused++) expect(phone.admit("send", 0)).toBeGreaterThan(0);
    // 1 s later the user holds 30 tokens and the phone 40 - 20 + 20 = 40: the phone gets the user's 30.
    expect(admitted(phone, "send", 40, 1000)).toBe(30);
  });

  it("refuses sends while the user's fan-out is in debt, and only sends", () => {
    const user = new UserRateLimits(settings);
    const limits = new SessionRateLimits(user);
    expect(limits.admit("send", 0)).toBe(0);
    limits.chargeFanOut(1000, 0);
    limits.chargeFanOut(1000, 0);
    expect(limits.admit("send", 0)).toBe(0);
    limits.chargeFanOut(1000, 0);
    // 2000 - 3000: a debt of 1000 recipients, paid off at 1000 a second.
    expect(limits.admit("send", 0)).toBe(1000);
    expect(new SessionRateLimits(user).admit("send", 500)).toBe(500);
    expect(limits.admit("history", 0)).toBe(0);
    expect(limits.admit("send", 1000)).toBe(0);
  });

  it("never asks for a wait beyond retryAfterMsMax", () => {
    const slow: RateLimitSettings = { ...settings, perSession: { ...settings.perSession, send: { perSecond: 0.001, burst: 1 } } };
    const limits = new SessionRateLimits(new UserRateLimits(slow));
    expect(limits.admit("send", 0)).toBe(0);
    expect(limits.admit("send", 0)).toBe(retryAfterMsMax);
  });

  it("names a kind for each expensive request and none for the others", () => {
    expect(rateLimitedKindOf("send")).toBe("send");
    expect(rateLimitedKindOf("typing")).toBe("typing");
    expect(rateLimitedKindOf("history")).toBe("history");
    expect(rateLimitedKindOf("openDirect")).toBe("conversationChange");
    expect(rateLimitedKindOf("createGroup")).toBe("conversationChange");
    expect(rateLimitedKindOf("addMembers")).toBe("conversationChange");
    expect(rateLimitedKindOf("ping")).toBeUndefined();
    expect(rateLimitedKindOf("read")).toBeUndefined();
    expect(rateLimitedKindOf("watchPresence")).toBeUndefined();
  });

  it("refuses settings with a rate that cannot work", () => {
    expect(() => assertRateLimitSettings(settings)).not.toThrow();
    expect(() => assertRateLimitSettings({ ...settings, fanOutPerUser: { perSecond: 1, burst: 0 } })).toThrow(/fanOutPerUser/);
    expect(() => assertRateLimitSettings({ ...settings, perUser: { ...settings.perUser, history: { perSecond: -1, burst: 1 } } })).toThrow(
      /perUser.history/,
    );
  });
});
