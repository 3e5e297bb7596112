import { Counter, Gauge, Histogram, Registry } from "prom-client";
import { describe, expect, it } from "vitest";
import { parsePrometheusText } from "./prometheus-text.ts";

describe("parsePrometheusText", () => {
  it("reads what prom-client writes: counters with labels, histograms, escaped label values", async () => {
    const registry = new Registry();
    const frames = new Counter({ name: "x_frames_total", help: "h", labelNames: ["type"], registers: [registry] });
    frames.labels("send").inc(3);
    frames.labels('we"ird\\').inc();
    const latency = new Histogram({ name: "x_seconds", help: "h", buckets: [0.1, 1], registers: [registry] });
    latency.observe(0.5);
    const scrape = parsePrometheusText(await registry.metrics());
    expect(scrape.types.get("x_frames_total")).toBe("counter");
    expect(scrape.types.get("x_seconds")).toBe("histogram");
    expect(scrape.sum("x_frames_total", { type: "send" })).toBe(3);
    expect(scrape.sum("x_frames_total", { type: 'we"ird\\' })).toBe(1);
    expect(scrape.sum("x_seconds_bucket", { le: "1" })).toBe(1);
    expect(scrape.sum("x_seconds_bucket", { le: "+Inf" })).toBe(1);
    expect(scrape.sum("x_seconds_count")).toBe(1);
  });

  it("reads NaN in any case, as Prometheus does (prom-client writes a gauge set to NaN as Nan)", async () => {
    const registry = new Registry();
    new Gauge({ name: "x_depth", help: "h", registers: [registry] }).set(Number.NaN);
    expect(parsePrometheusText(await registry.metrics()).find("x_depth")[0]?.value).toBeNaN();
    expect(parsePrometheusText("x 1\ny NaN\nz nan").find("z")[0]?.value).toBeNaN();
  });

  it("refuses what a scraper would refuse", () => {
    expect(() => parsePrometheusText("x_total{type=send} 1")).toThrow(/bad label/);
    expect(() => parsePrometheusText("x-total 1")).toThrow(/bad metric name/);
    expect(() => parsePrometheusText("x_total one")).toThrow(/not a number/);
    expect(() => parsePrometheusText("# TYPE x_total counterish")).toThrow(/bad TYPE/);
  });

  it("reads NaN and Inf in any case, as Prometheus does (prom-client writes Nan)", () => {
    const scrape = parsePrometheusText("x_lag_seconds Nan\nx_up +inf\nx_down -Inf");
    expect(scrape.find("x_lag_seconds")[0]?.value).toBeNaN();
    expect(scrape.sum("x_up")).toBe(Infinity);
    expect(scrape.sum("x_down")).toBe(-Infinity);
  });
});
