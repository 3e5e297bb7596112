// timedCellRequests and createCellRequestMetrics, the one way edges and workers time their requests to
// cells: each request observed once by kind, its failure counted by kind and code (a cell.error reply or a
// throw), a code outside the protocol's sets counted as "other", and a cell.moved not a failure.
import { Registry } from "prom-client";
import { describe, expect, it } from "vitest";
import type { CellErrorCode, CellReply, CellRequest } from "@cellwire/protocol";
import { parsePrometheusText } from "@cellwire/testkit";
import { createCellRequestMetrics, timedCellRequests, type CellRequestObserver } from "./cell-request-metrics.ts";
import { RemoteError, UnavailableError } from "./errors.ts";

const append: CellRequest = { type: "cell.appendMailbox", userId: "bob", eventId: "e", event: {} } as unknown as CellRequest;
const importPage: CellRequest = { type: "cell.import" } as unknown as CellRequest;
const appended: CellReply = { type: "cell.appended", seq: 1 } as unknown as CellReply;
const moved: CellReply = { type: "cell.moved", kind: "user", id: "bob", cellId: "b", epoch: 2 } as unknown as CellReply;

type Ended = { kind: string; elapsedMs: number; errorCode: CellErrorCode | undefined };

function recorder(): { readonly ended: Ended[]; readonly observer: CellRequestObserver } {
  const ended: Ended[] = [];
  return { ended, observer: { requestEnded: (kind, elapsedMs, errorCode) => ended.push({ kind, elapsedMs, errorCode }) } };
}

describe("timedCellRequests", () => {
  it("passes each request and its reply through, timed on the clock given, with the failure's code", async () => {
    let nowMs = 100;
    const answers: (() => Promise<CellReply>)[] = [
      () => Promise.resolve(appended),
      () => Promise.resolve({ type: "cell.error", code: "not_owner", message: "x" }),
      () => Promise.resolve(moved),
      () => Promise.reject(new UnavailableError("cell_unavailable", "nobody answered")),
      () => Promise.reject(new Error("a bug")),
    ];
    const seen: { cellId: string; deadlineAtMs: number | undefined }[] = [];
    const { ended, observer } = recorder();
    const timed = timedCellRequests(
      {
        toCell: (cellId, _request, deadlineAtMs) => {
          seen.push({ cellId, deadlineAtMs });
          nowMs += 7;
          return (answers.shift() as () => Promise<CellReply>)();
        },
      },
      observer,
      () => nowMs,
    );
    expect(await timed.request("a", append, 500)).toBe(appended);
    expect(await timed.request("a", append)).toEqual({ type: "cell.error", code: "not_owner", message: "x" });
    expect(await timed.request("b", append)).toBe(moved);
    await expect(timed.request("b", importPage)).rejects.toThrow("nobody answered");
    await expect(timed.request("b", importPage)).rejects.toThrow("a bug");
    expect(seen[0]).toEqual({ cellId: "a", deadlineAtMs: 500 });
    expect(ended).toEqual([
      { kind: "cell.appendMailbox", elapsedMs: 7, errorCode: undefined },
      { kind: "cell.appendMailbox", elapsedMs: 7, errorCode: "not_owner" },
      { kind: "cell.appendMailbox", elapsedMs: 7, errorCode: undefined },
      { kind: "cell.import", elapsedMs: 7, errorCode: "cell_unavailable" },
      { kind: "cell.import", elapsedMs: 7, errorCode: "internal" },
    ]);
  });
});

describe("createCellRequestMetrics", () => {
  const names = { durationName: "x_cell_request_seconds", durationHelp: "h", errorsName: "x_cell_request_errors_total", errorsHelp: "h" };

  it("times requests by kind (every kind shows from the first scrape) and counts failures by kind and code", async () => {
    const registry = new Registry();
    const metrics = createCellRequestMetrics(registry, names);
    const before = parsePrometheusText(await registry.metrics());
    expect(before.sum("x_cell_request_seconds_count", { kind: "cell.appendMailbox" })).toBe(0);
    expect(before.find("x_cell_request_seconds_count", { kind: "cell.import" })).toHaveLength(1);
    expect(before.find("x_cell_request_errors_total")).toEqual([]);
    const timed = timedCellRequests(
      {
        toCell: (_cellId, request) =>
          request.type === "cell.import" ? Promise.reject(new RemoteError("overloaded", "busy")) : Promise.resolve(appended),
      },
      metrics,
      () => 0,
    );
    await timed.request("a", append);
    await timed.request("a", append);
    await expect(timed.request("a", importPage)).rejects.toThrow("busy");
    metrics.requestEnded("cell.appendMailbox", 2500, "a_code_from_a_newer_peer" as CellErrorCode);
    const after = parsePrometheusText(await registry.metrics());
    expect(after.sum("x_cell_request_seconds_count", { kind: "cell.appendMailbox" })).toBe(3);
    expect(after.sum("x_cell_request_seconds_sum", { kind: "cell.appendMailbox" })).toBe(2.5);
    expect(after.sum("x_cell_request_seconds_count", { kind: "cell.import" })).toBe(1);
    expect(after.sum("x_cell_request_errors_total", { kind: "cell.import", code: "overloaded" })).toBe(1);
    expect(after.sum("x_cell_request_errors_total", { kind: "cell.appendMailbox", code: "other" })).toBe(1);
    expect(after.sum("x_cell_request_errors_total")).toBe(2);
    expect(after.types.get("x_cell_request_seconds")).toBe("histogram");
  });

  it("counts a kind outside the protocol's set as other, not under its own string", async () => {
    const registry = new Registry();
    const metrics = createCellRequestMetrics(registry, names);
    metrics.requestEnded("cell.madeUp" as CellRequest["type"], 1, "internal");
    const scraped = parsePrometheusText(await registry.metrics());
    expect(scraped.sum("x_cell_request_seconds_count", { kind: "other" })).toBe(1);
    expect(scraped.sum("x_cell_request_errors_total", { kind: "other", code: "internal" })).toBe(1);
    expect(scraped.find("x_cell_request_seconds_count", { kind: "cell.madeUp" })).toEqual([]);
  });
});
