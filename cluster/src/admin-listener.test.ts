import { afterEach, describe, expect, it } from "vitest";
import { startAdminListener, type AdminListener } from "./admin-listener.ts";
import { readinessReport } from "./health.ts";
import { createServiceMetrics } from "./service-metrics.ts";

describe("readinessReport", () => {
  it("is ready only when every deciding check is ok; an informing check shows but does not decide", async () => {
    const report = await readinessReport([
      { name: "nats", check: () => ({ ok: true }) },
      { name: "directory", check: () => ({ ok: false, detail: "redis down" }), decidesReadiness: false },
    ]);
    expect(report.ready).toBe(true);
    expect(report.checks["directory"]).toEqual({ ok: false, detail: "redis down", decidesReadiness: false });
    const failing = await readinessReport([
      {
        name: "database",
        check: () => {
          throw new Error("connection refused");
        },
      },
    ]);
    expect(failing).toEqual({ ready: false, checks: { database: { ok: false, detail: "connection refused", decidesReadiness: true } } });
  });
});

describe("startAdminListener", () => {
  let listener: AdminListener | undefined;
  afterEach(async () => {
    await listener?.stop();
    listener = undefined;
  });

  it("serves /metrics with the service's labels, /livez, and /readyz as 200 or 503 by its checks", async () => {
    let databaseOk = true;
    const metrics = createServiceMetrics("worker", "cellwire-worker-a-1");
    listener = await startAdminListener({
      host: "127.0.0.1",
      port: 0,
      metrics,
      readiness: [{ name: "database", check: () => ({ ok: databaseOk }) }],
    });
    const base = `http://127.0.0.1:${listener.port}`;
    const scrape = await fetch(`${base}/metrics`);
    expect(scrape.headers.get("content-type")).toContain("text/plain");
    expect(await scrape.text()).toMatch(/^cellwire_process_cpu_seconds_total\{service="worker",process="cellwire-worker-a-1"\} /m);
    expect((await fetch(`${base}/livez`)).status).toBe(200);
    expect((await fetch(`${base}/readyz`)).status).toBe(200);
    databaseOk = false;
    const unready = await fetch(`${base}/readyz`);
    expect(unready.status).toBe(503);
    expect(await unready.json()).toEqual({ ready: false, checks: { database: { ok: false, decidesReadiness: true } } });
    expect((await fetch(`${base}/nothing`)).status).toBe(404);
    expect((await fetch(`${base}/metrics`, { method: "POST" })).status).toBe(405);
  });
});
