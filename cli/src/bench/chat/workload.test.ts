import { describe, expect, it } from "vitest";
import {
  continueAfter,
  countDeliveries,
  defaultRateGrid,
  findKnee,
  intendedUs,
  isMeasured,
  messageBody,
  messageBodyHeaderLengthMax,
  messageKey,
  messageKeyProcessStride,
  parseMessageBody,
  planConversations,
  processOfUser,
  ratePasses,
  sendSchedule,
  senderOrder,
  serverUrlsOfUser,
} from "./workload.ts";

describe("the rate grid", () => {
  it("doubles from 25 to 25 × 2^10", () => {
    expect(defaultRateGrid()).toEqual([25, 50, 100, 200, 400, 800, 1600, 3200, 6400, 12_800, 25_600]);
  });
});

describe("the conversation plan", () => {
  it("pairs consecutive users for 1:1 and leaves the odd one out", () => {
    expect(planConversations(5, 2)).toEqual([
      { index: 0, memberUserIndexes: [0, 1] },
      { index: 1, memberUserIndexes: [2, 3] },
    ]);
  });

  it("makes one group of everyone when the group is as large as the users", () => {
    const plan = planConversations(1000, 1000);
    expect(plan).toHaveLength(1);
    expect(plan[0]?.memberUserIndexes).toHaveLength(1000);
  });

  it("leaves the users that cannot fill a group unused", () => {
    const plan = planConversations(1000, 3);
    expect(plan).toHaveLength(333);
    expect(plan.at(-1)?.memberUserIndexes).toEqual([996, 997, 998]);
  });

  it("refuses a group of one, and more members than users", () => {
    expect(() => planConversations(10, 1)).toThrow(RangeError);
    expect(() => planConversations(10, 11)).toThrow(RangeError);
  });

  it("puts the two members of each pair in different load processes and on different servers", () => {
    const urls = ["ws://edge-1", "ws://edge-2"];
    for (const { memberUserIndexes } of planConversations(1000, 2)) {
      const [first, second] = memberUserIndexes;
      if (first === undefined || second === undefined) throw new Error("a pair has two members");
      for (const processCount of [2, 3, 4]) expect(processOfUser(first, processCount)).not.toBe(processOfUser(second, processCount));
      expect(serverUrlsOfUser(first, urls)[0]).not.toBe(serverUrlsOfUser(second, urls)[0]);
    }
  });

  it("lets the members of different conversations take turns, so that every conversation is busy", () => {
    // Load process 0 of 2 with groups of 4: users 0 and 2 in conversation 0, 4 and 6 in conversation 1.
    const senders = [0, 2, 4, 6].map((userIndex) => ({ userIndex, conversationIndex: Math.floor(userIndex / 4) }));
    expect(senderOrder(senders).map(({ userIndex }) => userIndex)).toEqual([0, 4, 2, 6]);
  });

  it("gives each user every server, its own first", () => {
    expect(serverUrlsOfUser(4, ["a", "b", "c"])).toEqual(["b", "c", "a"]);
  });
});

describe("the send schedule", () => {
  const timing = { rate: 100, startUs: 1_000_000_000, warmupS: 1, durationS: 2 };

  it("interleaves the processes so that together they send at the rate, evenly spaced", () => {
    const schedules = [0, 1].map((processIndex) => sendSchedule(timing, processIndex, 2));
    const all = schedules
      .flatMap((schedule) => Array.from({ length: schedule.sendCount }, (_, index) => intendedUs(schedule, index)))
      .sort((left, right) => left - right);
    // 3 s at 100 sends/s.
    expect(all).toHaveLength(300);
    expect(all[0]).toBe(timing.startUs);
    for (let index = 1; index < all.length; index++) expect((all[index] ?? 0) - (all[index - 1] ?? 0)).toBe(10_000);
  });

  it("measures the sends intended after the warm-up and before the end", () => {
    const schedule = sendSchedule(timing, 0, 1);
    const measured = Array.from({ length: schedule.sendCount }, (_, index) => intendedUs(schedule, index)).filter((intended) =>
      isMeasured(schedule, intended),
    );
    expect(measured).toHaveLength(200);
    expect(measured[0]).toBe(timing.startUs + 1_000_000);
    expect(measured.at(-1)).toBe(timing.startUs + 2_990_000);
  });

  it("spreads a rate that does not divide evenly", () => {
    const schedule = sendSchedule({ rate: 3, startUs: 0, warmupS: 0, durationS: 1 }, 1, 2);
    expect(schedule.sendCount).toBe(1);
    expect(intendedUs(schedule, 0)).toBe(333_333);
  });
});

describe("message keys and bodies", () => {
  it("keeps the keys of different processes apart", () => {
    expect(messageKey(1, 5)).toBe(messageKeyProcessStride + 5);
    expect(() => messageKey(0, messageKeyProcessStride)).toThrow(RangeError);
  });

  it("round-trips key and intended time through a padded body of the asked size", () => {
    const intended = Math.round(performance.timeOrigin * 1000) + 123_456;
    const body = messageBody(15_000_000_042, intended, 100);
    expect(body).toHaveLength(100);
    expect(parseMessageBody(body)).toEqual({ key: 15_000_000_042, intendedUs: intended });
  });

  it("never cuts the header, even when the body size is smaller", () => {
    const body = messageBody(15_999_999_999, 1_999_999_999_999_999, 10);
    expect(body.length).toBeLessThanOrEqual(messageBodyHeaderLengthMax);
    expect(parseMessageBody(body)).toEqual({ key: 15_999_999_999, intendedUs: 1_999_999_999_999_999 });
  });

  it("rejects bodies it did not make", () => {
    for (const body of ["", "hello", "1", "1 ", " 1 2 ", "a 2 x", "1 b x", "-1 2 x", "1 2.5 x"])
      expect(parseMessageBody(body), body).toBeUndefined();
  });
});

describe("counting deliveries", () => {
  const sent = [{ keys: Float64Array.from([1, 2]), members: Uint32Array.from([2, 2]) }];

  it("finds every delivery of every send", () => {
    const tallies = [{ keys: Float64Array.from([1, 2]), onTime: Uint32Array.from([1, 2]), late: Uint32Array.from([1, 0]) }];
    expect(countDeliveries(sent, tallies)).toEqual({ expected: 4, onTime: 3, late: 1, missing: 0, unexpected: 0 });
  });

  it("does not let an extra delivery of one message hide a lost one of another", () => {
    const tallies = [
      { keys: Float64Array.from([1]), onTime: Uint32Array.from([2]), late: Uint32Array.from([0]) },
      { keys: Float64Array.from([1, 3]), onTime: Uint32Array.from([1, 1]), late: Uint32Array.from([0, 0]) },
    ];
    expect(countDeliveries(sent, tallies)).toEqual({ expected: 4, onTime: 4, late: 0, missing: 2, unexpected: 2 });
  });
});

describe("judging rates", () => {
  it("passes only with nothing missing or late and p99 delivery within 50 ms", () => {
    const good = { sent: 10, missing: 0, late: 0, deliveryP99Ms: 50 };
    expect(ratePasses(good)).toBe(true);
    expect(ratePasses({ ...good, deliveryP99Ms: 50.1 })).toBe(false);
    expect(ratePasses({ ...good, missing: 1 })).toBe(false);
    expect(ratePasses({ ...good, late: 1 })).toBe(false);
    expect(ratePasses({ ...good, sent: 0, deliveryP99Ms: undefined })).toBe(false);
  });

  it("puts the knee below the first failing rate, even when a higher rate passes again", () => {
    const outcomes = [
      { rate: 25, pass: true },
      { rate: 50, pass: true },
      { rate: 100, pass: false },
      { rate: 200, pass: true },
    ];
    expect(findKnee(outcomes)).toEqual({ kneeRate: 50, firstFailingRate: 100 });
  });

  it("has no knee when the first rate fails, and no failing rate when all pass", () => {
    expect(findKnee([{ rate: 25, pass: false }])).toEqual({ kneeRate: undefined, firstFailingRate: 25 });
    expect(findKnee([{ rate: 25, pass: true }])).toEqual({ kneeRate: 25, firstFailingRate: undefined });
  });

  it("stops the grid after its first failure, unless told to keep going or given the rates", () => {
    const failed = { rate: 100, pass: false };
    expect(continueAfter(failed, { explicitRates: false, keepGoing: false })).toBe(false);
    expect(continueAfter(failed, { explicitRates: false, keepGoing: true })).toBe(true);
    expect(continueAfter(failed, { explicitRates: true, keepGoing: false })).toBe(true);
    expect(continueAfter({ rate: 100, pass: true }, { explicitRates: false, keepGoing: false })).toBe(true);
  });
});
