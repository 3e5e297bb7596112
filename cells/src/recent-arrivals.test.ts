import { describe, expect, it } from "vitest";
import { RecentArrivals } from "./recent-arrivals.ts";

describe("RecentArrivals", () => {
  it("answers when the oldest of the last `count` arrivals came, this one included", () => {
    const arrivals = new RecentArrivals(3);
    expect(arrivals.arrive(10)).toBe(Number.NEGATIVE_INFINITY);
    expect(arrivals.arrive(20)).toBe(Number.NEGATIVE_INFINITY);
    expect(arrivals.arrive(30)).toBe(10);
    expect(arrivals.arrive(45)).toBe(20);
    expect(arrivals.arrive(46)).toBe(30);
  });

  it("with a count of 1 answers the arrival itself", () => {
    const arrivals = new RecentArrivals(1);
    expect(arrivals.arrive(5)).toBe(5);
    expect(arrivals.arrive(9)).toBe(9);
  });

  it("refuses a count below 1", () => {
    expect(() => new RecentArrivals(0)).toThrow(RangeError);
  });
});
