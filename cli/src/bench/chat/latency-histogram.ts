// Latency histograms of the chat benchmark: HDR histograms (hdr-histogram-js, its pure-JS build) in
// microseconds from 1 µs to 60 s at 3 significant digits, so a percentile is within 0.1% whatever the
// spread, and a histogram costs the same few kilobytes at 10 or 10 million samples. Load processes encode
// theirs (compressed, base64) to send them over IPC; the coordinator decodes and merges them.
import { build, decodeFromCompressedBase64, encodeIntoCompressedBase64, type Histogram } from "hdr-histogram-js";

export type { Histogram } from "hdr-histogram-js";

export const latencyUsMin = 1;
/** A minute: anything slower is recorded as a minute (and fails its rate many times over anyway). */
export const latencyUsMax = 60_000_000;
const significantDigits = 3;
/** An encoded histogram past this many characters is refused: ours are a few kilobytes. */
export const encodedHistogramLengthMax = 1_000_000;

export function createLatencyHistogram(): Histogram {
  // WebAssembly would be faster but needs an async start and its memory freed by hand; recording a few
  // thousand values a second costs microseconds either way.
  return build({
    lowestDiscernibleValue: latencyUsMin,
    highestTrackableValue: latencyUsMax,
    numberOfSignificantValueDigits: significantDigits,
    autoResize: false,
    useWebAssembly: false,
  });
}

/** Records a latency, clamped into the histogram's range (a fixed-range histogram throws outside it). */
export function recordLatencyUs(histogram: Histogram, latencyUs: number): void {
  histogram.recordValue(Math.min(latencyUsMax, Math.max(latencyUsMin, Math.round(latencyUs))));
}

export function encodeHistogram(histogram: Histogram): string {
  return encodeIntoCompressedBase64(histogram);
}

export class HistogramDecodeError extends Error {
  override readonly name = "HistogramDecodeError";
}

/** Decodes what encodeHistogram made; throws HistogramDecodeError for anything else. */
export function decodeHistogram(encoded: string): Histogram {
  if (encoded.length > encodedHistogramLengthMax)
    throw new HistogramDecodeError(`an encoded histogram of ${encoded.length} characters is over the ${encodedHistogramLengthMax} limit`);
  try {
    return decodeFromCompressedBase64(encoded, 32, false);
  } catch (error) {
    throw new HistogramDecodeError(`not an encoded histogram: ${error instanceof Error ? error.message : String(error)}`, { cause: error });
  }
}

/** One histogram holding every value of `histograms`. */
export function mergeHistograms(histograms: readonly Histogram[]): Histogram {
  const merged = createLatencyHistogram();
  for (const histogram of histograms) merged.add(histogram);
  return merged;
}

export type LatencySummaryMs = { readonly p50: number; readonly p99: number; readonly max: number };

/** p50, p99 and max in milliseconds (to the microsecond); undefined for an empty histogram. */
export function summariseMs(histogram: Histogram): LatencySummaryMs | undefined {
  if (histogram.totalCount === 0) return undefined;
  const toMs = (us: number): number => Math.round(us) / 1000;
  return { p50: toMs(histogram.getValueAtPercentile(50)), p99: toMs(histogram.getValueAtPercentile(99)), max: toMs(histogram.maxValue) };
}
