import { Histogram, Registry } from "prom-client";
import { describe, expect, it } from "vitest";
import { histogramCellsMax, PlainHistogram } from "./plain-histogram.ts";

const buckets = [0.001, 0.01, 0.1, 1];
const observations = [0.0005, 0.001, 0.002, 0.05, 0.05, 0.5, 3, 0.01];

describe("PlainHistogram", () => {
  it("scrapes as prom-client's own histogram does for the same observations, unlabelled and labelled", async () => {
    const plainRegistry = new Registry();
    const referenceRegistry = new Registry();
    const plain = new PlainHistogram({ name: "x_seconds", help: "h", buckets, registry: plainRegistry });
    const reference = new Histogram({ name: "x_seconds", help: "h", buckets, registers: [referenceRegistry] });
    const plainKinds = new PlainHistogram<"send" | "history">({
      name: "y_seconds",
      help: "h",
      buckets,
      registry: plainRegistry,
      labelName: "kind",
    });
    const referenceKinds = new Histogram({ name: "y_seconds", help: "h", buckets, labelNames: ["kind"], registers: [referenceRegistry] });
    const cell = plain.cell();
    for (const value of observations) {
      cell.observe(value);
      reference.observe(value);
      plainKinds.cell("send").observe(value);
      referenceKinds.labels("send").observe(value);
    }
    plainKinds.cell("history").observe(0.2);
    referenceKinds.labels("history").observe(0.2);
    expect(await plainRegistry.metrics()).toBe(await referenceRegistry.metrics());
    // A reset zeroes the cells and keeps them, since callers hold them bound (prom-client drops the series
    // until their next observation; zeros read the same to Prometheus).
    plainRegistry.resetMetrics();
    expect(await plainRegistry.getSingleMetricAsString("x_seconds")).toContain("\nx_seconds_count 0");
    expect(await plainRegistry.getSingleMetricAsString("y_seconds")).toContain('\ny_seconds_count{kind="send"} 0');
  });

  it("reports an unlabelled histogram's zero buckets before any observation, and refuses an unbounded label set", async () => {
    const registry = new Registry();
    new PlainHistogram({ name: "z_seconds", help: "h", buckets, registry });
    expect(await registry.getSingleMetricAsString("z_seconds")).toContain('z_seconds_bucket{le="+Inf"} 0');
    const labelled = new PlainHistogram({ name: "w_seconds", help: "h", buckets, registry, labelName: "kind" });
    for (let index = 0; index < histogramCellsMax; index++) labelled.cell(`k${index}`);
    expect(() => labelled.cell("one-too-many")).toThrow(/more than 1000 label values/);
  });
});
