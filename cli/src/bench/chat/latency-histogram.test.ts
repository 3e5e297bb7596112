import { describe, expect, it } from "vitest";
import {
  createLatencyHistogram,
  decodeHistogram,
  encodeHistogram,
  HistogramDecodeError,
  latencyUsMax,
  mergeHistograms,
  recordLatencyUs,
  summariseMs,
} from "./latency-histogram.ts";

describe("latency histograms", () => {
  it("summarise p50, p99 and max in milliseconds within 0.1%", () => {
    const histogram = createLatencyHistogram();
    for (let value = 1; value <= 1000; value++) recordLatencyUs(histogram, value * 1000);
    const summary = summariseMs(histogram);
    expect(Math.abs((summary?.p50 ?? 0) - 500) / 500).toBeLessThan(0.001);
    expect(Math.abs((summary?.p99 ?? 0) - 990) / 990).toBeLessThan(0.001);
    expect(Math.abs((summary?.max ?? 0) - 1000) / 1000).toBeLessThan(0.001);
  });

  it("have no summary when empty", () => {
    expect(summariseMs(createLatencyHistogram())).toBeUndefined();
  });

  it("clamp values outside 1 µs .. 60 s instead of throwing", () => {
    const histogram = createLatencyHistogram();
    recordLatencyUs(histogram, -5);
    recordLatencyUs(histogram, 10 * latencyUsMax);
    expect(histogram.totalCount).toBe(2);
    expect(histogram.minNonZeroValue).toBe(1);
    expect(Math.abs(histogram.maxValue - latencyUsMax) / latencyUsMax).toBeLessThan(0.001);
  });

  it("survive encoding, and merge into one", () => {
    const first = createLatencyHistogram();
    const second = createLatencyHistogram();
    for (let index = 0; index < 99; index++) recordLatencyUs(first, 2000);
    recordLatencyUs(second, 40_000);
    const merged = mergeHistograms([decodeHistogram(encodeHistogram(first)), decodeHistogram(encodeHistogram(second))]);
    expect(merged.totalCount).toBe(100);
    expect(summariseMs(merged)?.p50).toBeCloseTo(2, 2);
    expect(summariseMs(merged)?.max).toBeCloseTo(40, 1);
  });

  it("refuse to decode what is not an encoded histogram", () => {
    expect(() => decodeHistogram("not base64 at all")).toThrow(HistogramDecodeError);
    expect(() => decodeHistogram("x".repeat(2_000_000))).toThrow(HistogramDecodeError);
  });
});
