// Reads a Prometheus text exposition (format 0.0.4) the way a scraper does, strictly: a line that is not
// a comment, a blank or a well-formed sample fails the parse, so a test that scrapes a process proves the
// output is one Prometheus accepts, not only that a substring is in it.
export interface PrometheusSample {
  readonly name: string;
  readonly labels: Readonly<Record<string, string>>;
  readonly value: number;
}

export interface PrometheusScrape {
  readonly samples: readonly PrometheusSample[];
  /** Metric family name → its TYPE line's type (counter, gauge, histogram, summary, untyped). */
  readonly types: ReadonlyMap<string, string>;
  /** The samples named `name` whose labels include every pair in `labels`. */
  readonly find: (name: string, labels?: Readonly<Record<string, string>>) => readonly PrometheusSample[];
  /** The sum of those samples' values (0 when there are none). */
  readonly sum: (name: string, labels?: Readonly<Record<string, string>>) => number;
}

const metricName = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
const labelPair = /^([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"\s*(?:,\s*|$)/;

export function parsePrometheusText(text: string): PrometheusScrape {
  const samples: PrometheusSample[] = [];
  const types = new Map<string, string>();
  text.split("\n").forEach((line, index) => {
    const fail = (why: string): never => {
      throw new Error(`line ${index + 1} of the scrape: ${why}: ${line}`);
    };
    if (line.trim() === "") return;
    if (line.startsWith("#")) {
      const typeLine = /^# TYPE (\S+) (counter|gauge|histogram|summary|untyped)$/.exec(line);
      if (typeLine !== null) {
        if (!metricName.test(typeLine[1] ?? "")) fail("a bad metric name");
        types.set(typeLine[1] ?? "", typeLine[2] ?? "");
      } else if (line.startsWith("# TYPE")) fail("a bad TYPE line");
      return;
    }
    const open = line.indexOf("{");
    const space = line.indexOf(" ");
    let name: string;
    let rest: string;
    const labels: Record<string, string> = {};
    if (open >= 0 && (space < 0 || open < space)) {
      name = line.slice(0, open);
      const close = line.indexOf("}", open);
      if (close < 0) fail("labels not closed");
      let labelText = line.slice(open + 1, close);
      while (labelText.length > 0) {
        const pair = labelPair.exec(labelText);
        if (pair === null) return fail("a bad label");
        labels[pair[1] ?? ""] = (pair[2] ?? "").replace(/\\n/g, "\n").replace(/\\"/g, '"').replace(/\\\\/g, "\\");
        labelText = labelText.slice(pair[0].length);
      }
      rest = line.slice(close + 1);
    } else {
      name = line.slice(0, space);
      rest = line.slice(space);
    }
    if (!metricName.test(name)) fail("a bad metric name");
    const fields = rest.trim().split(/\s+/);
    if (fields.length < 1 || fields.length > 2) fail("a bad value");
    const valueText = fields[0] ?? "";
    // Prometheus reads values with Go's ParseFloat, which ignores case in NaN (prom-client writes "Nan").
    const isNaNText = valueText.toLowerCase() === "nan";
    const value = valueText === "+Inf" ? Infinity : valueText === "-Inf" ? -Infinity : isNaNText ? NaN : Number(valueText);
    if (Number.isNaN(value) && !isNaNText) fail("a value that is not a number");
    samples.push({ name, labels, value });
  });
  const find = (name: string, wanted: Readonly<Record<string, string>> = {}): readonly PrometheusSample[] =>
    samples.filter((sample) => sample.name === name && Object.entries(wanted).every(([key, value]) => sample.labels[key] === value));
  return { samples, types, find, sum: (name, wanted) => find(name, wanted).reduce((total, sample) => total + sample.value, 0) };
}
