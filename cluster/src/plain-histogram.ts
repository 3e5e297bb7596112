// A histogram for the message path. prom-client's observe builds a label object, checks it and hashes it
// on every call, even through a bound child: about 3 µs each, measured in the chat benchmark's profiles
// (histogram.js's observe took 145 ms of an edge's CPU and 110 ms of a worker's over 10,000 messages to
// groups of 10, where an edge observes once per delivered message per session). Here a cell, bound once
// per label value, keeps its bucket counts in an array: an observation is a scan of the bounds and three
// additions. Scrapes read the cells, in the same exposition as any prom-client histogram.
import { Histogram, type Registry } from "prom-client";

/** One label value's counts; observe() is all the message path calls. */
export class HistogramCell {
  /** counts[i]: observations in (bounds[i-1], bounds[i]]; the last slot holds those above every bound. */
  readonly counts: number[];
  sum = 0;
  count = 0;

  constructor(private readonly bounds: readonly number[]) {
    this.counts = new Array<number>(bounds.length + 1).fill(0);
  }

  observe(value: number): void {
    const bounds = this.bounds;
    let index = 0;
    while (index < bounds.length && value > (bounds[index] ?? Infinity)) index++;
    this.counts[index] = (this.counts[index] ?? 0) + 1;
    this.sum += value;
    this.count++;
  }

  reset(): void {
    this.counts.fill(0);
    this.sum = 0;
    this.count = 0;
  }
}

export interface PlainHistogramConfiguration<V extends string> {
  readonly name: string;
  readonly help: string;
  /** Upper bounds, ascending. */
  readonly buckets: readonly number[];
  readonly registry: Registry;
  /** A label, whose values must come from a closed set (a cell each, made on first use), or none for one cell. */
  readonly labelName?: string;
}

/** Cells one histogram may hold: its label's values are a closed set, so reaching this is a bug. */
export const histogramCellsMax = 1000;

/**
 * A histogram whose observations go through cells (`cell(value)`, bound once). It is a prom-client
 * Histogram so a registry takes it, but only its cells are reported: prom-client's own observe() and
 * labels() are not for it.
 */
export class PlainHistogram<V extends string = string> extends Histogram<string> {
  private readonly cells = new Map<V | "", HistogramCell>();
  private readonly bounds: readonly number[];
  private readonly labelName: string | undefined;
  private readonly metricName: string;
  private readonly helpText: string;

  constructor(configuration: PlainHistogramConfiguration<V>) {
    super({
      name: configuration.name,
      help: configuration.help,
      buckets: [...configuration.buckets],
      registers: [configuration.registry],
      ...(configuration.labelName === undefined ? {} : { labelNames: [configuration.labelName] }),
    });
    this.bounds = [...configuration.buckets];
    this.labelName = configuration.labelName;
    this.metricName = configuration.name;
    this.helpText = configuration.help;
  }

  /** The cell of a label value, or the one cell of an unlabelled histogram; bind it once, then observe. */
  cell(value?: V): HistogramCell {
    const key = this.labelName === undefined ? "" : (value ?? "");
    let cell = this.cells.get(key);
    if (cell === undefined) {
      if (this.cells.size >= histogramCellsMax) throw new Error(`${this.metricName}: more than ${histogramCellsMax} label values`);
      cell = new HistogramCell(this.bounds);
      this.cells.set(key, cell);
    }
    return cell;
  }

  /**
   * What a registry reads at a scrape: prom-client's registry calls getForPromString (not in its typings)
   * in place of get(), and its get() is this with each value's labels merged, so both report the cells.
   * The shape is prom-client's own: `le` in labels, the histogram's label in sharedLabels.
   */
  async getForPromString(): Promise<{
    name: string;
    help: string;
    type: "histogram";
    aggregator: "sum";
    values: { metricName: string; labels: { le?: number | string }; sharedLabels: Record<string, string>; value: number }[];
  }> {
    // An unlabelled histogram reports its buckets from the start, as prom-client's does.
    if (this.labelName === undefined) this.cell();
    const values: { metricName: string; labels: { le?: number | string }; sharedLabels: Record<string, string>; value: number }[] = [];
    for (const [labelValue, cell] of this.cells) {
      const sharedLabels: Record<string, string> = this.labelName === undefined ? {} : { [this.labelName]: labelValue };
      let cumulative = 0;
      this.bounds.forEach((bound, index) => {
        cumulative += cell.counts[index] ?? 0;
        values.push({ metricName: `${this.metricName}_bucket`, labels: { le: bound }, sharedLabels, value: cumulative });
      });
      values.push({ metricName: `${this.metricName}_bucket`, labels: { le: "+Inf" }, sharedLabels, value: cell.count });
      values.push({ metricName: `${this.metricName}_sum`, labels: {}, sharedLabels, value: cell.sum });
      values.push({ metricName: `${this.metricName}_count`, labels: {}, sharedLabels, value: cell.count });
    }
    return Promise.resolve({ name: this.metricName, help: this.helpText, type: "histogram", aggregator: "sum", values });
  }

  override reset(): void {
    super.reset();
    // prom-client's constructor calls reset() before this class's fields exist.
    const cells = this.cells as Map<V | "", HistogramCell> | undefined;
    if (cells !== undefined) for (const cell of cells.values()) cell.reset();
  }
}
