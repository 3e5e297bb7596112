// A counter for the message path, the counting twin of PlainHistogram. prom-client's inc() hashes the
// label values into a string on every call, even through a bound child; here a cell, bound once per label
// values, is a plain number the caller adds to, and a scrape reads the cells. Edges count frames, sends and
// acks with it; workers count requests by kind and outcome.
import { Counter, type Registry } from "prom-client";

/** One set of label values' count; `value += n` is all the message path does. */
export class CounterCell {
  value = 0;
}

export interface PlainCounterConfiguration {
  readonly name: string;
  readonly help: string;
  readonly registry: Registry;
  /** Labels whose values must come from closed sets (a cell per combination, made on first use), or none. */
  readonly labelNames?: readonly string[];
}

/** Cells one counter may hold: its labels' values are closed sets, so reaching this is a bug. */
export const counterCellsMax = 10_000;

/**
 * A counter whose increments go through cells (`cell(...labelValues)`, bound once). It is a prom-client
 * Counter so a registry takes it, but only its cells are reported: prom-client's own inc() and labels()
 * are not for it.
 */
export class PlainCounter extends Counter<string> {
  private readonly cells = new Map<string, { readonly labels: Readonly<Record<string, string>>; readonly cell: CounterCell }>();
  private readonly names: readonly string[];

  constructor(configuration: PlainCounterConfiguration) {
    super({
      name: configuration.name,
      help: configuration.help,
      labelNames: [...(configuration.labelNames ?? [])],
      registers: [configuration.registry],
    });
    this.names = [...(configuration.labelNames ?? [])];
  }

  /**
   * The cell of these label values, one per label in order (none for an unlabelled counter). Binding a
   * cell makes its series show at 0 from the next scrape: a rate over a series that appears late misses
   * its start, so bind the closed set up front where it is known.
   */
  cell(...labelValues: string[]): CounterCell {
    if (labelValues.length !== this.names.length)
      throw new Error(`a cell of this counter takes ${this.names.length} label values, not ${labelValues.length}`);
    const key = labelValues.join("\u0000");
    let entry = this.cells.get(key);
    if (entry === undefined) {
      if (this.cells.size >= counterCellsMax) throw new Error(`more than ${counterCellsMax} label value combinations`);
      entry = { labels: Object.fromEntries(this.names.map((name, index) => [name, labelValues[index] ?? ""])), cell: new CounterCell() };
      this.cells.set(key, entry);
    }
    return entry.cell;
  }

  override async get(): ReturnType<Counter<string>["get"]> {
    const metric = await super.get();
    // An unlabelled counter reports 0 from the start, as prom-client's does.
    if (this.names.length === 0) this.cell();
    return { ...metric, values: [...this.cells.values()].map(({ labels, cell }) => ({ labels, value: cell.value })) };
  }

  override reset(): void {
    super.reset();
    // prom-client's constructor calls reset() before this class's fields exist; callers keep their cells bound.
    const cells = this.cells as Map<string, { readonly cell: CounterCell }> | undefined;
    if (cells !== undefined) for (const { cell } of cells.values()) cell.value = 0;
  }
}
