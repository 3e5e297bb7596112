import { Counter, Registry } from "prom-client";
import { describe, expect, it } from "vitest";
import { counterCellsMax, PlainCounter } from "./plain-counter.ts";

describe("PlainCounter", () => {
  it("scrapes as prom-client's own counter does for the same increments, unlabelled and with two labels", async () => {
    const plainRegistry = new Registry();
    const referenceRegistry = new Registry();
    const plain = new PlainCounter({ name: "x_total", help: "h", registry: plainRegistry });
    const reference = new Counter({ name: "x_total", help: "h", registers: [referenceRegistry] });
    const plainRequests = new PlainCounter({ name: "y_total", help: "h", registry: plainRegistry, labelNames: ["kind", "outcome"] });
    const referenceRequests = new Counter({ name: "y_total", help: "h", labelNames: ["kind", "outcome"], registers: [referenceRegistry] });
    expect(await plainRegistry.metrics()).toBe(await referenceRegistry.metrics());
    const cell = plain.cell();
    const sendOk = plainRequests.cell("send", "ok");
    for (let index = 0; index < 5; index++) {
      cell.value++;
      reference.inc();
      sendOk.value++;
      referenceRequests.labels("send", "ok").inc();
    }
    plainRequests.cell("history", "overloaded").value += 2;
    referenceRequests.labels("history", "overloaded").inc(2);
    expect(await plainRegistry.metrics()).toBe(await referenceRegistry.metrics());
    // A reset zeroes the cells and keeps them bound.
    plainRegistry.resetMetrics();
    sendOk.value++;
    expect(await plainRegistry.getSingleMetricAsString("y_total")).toContain('\ny_total{kind="send",outcome="ok"} 1');
    expect(await plainRegistry.getSingleMetricAsString("x_total")).toContain("\nx_total 0");
  });

  it("refuses a cell with the wrong number of label values, and an unbounded label set", () => {
    const counter = new PlainCounter({ name: "z_total", help: "h", registry: new Registry(), labelNames: ["kind"] });
    expect(() => counter.cell()).toThrow(/takes 1 label values, not 0/);
    for (let index = 0; index < counterCellsMax; index++) counter.cell(`k${index}`);
    expect(() => counter.cell("one-too-many")).toThrow(/more than 10000/);
  });
});
