// The one place a process times its requests to cells (issue 13, item 1): edges (client requests) and
// workers (the relay's mailbox appends, migration's import pages) wrap the requester their Router sends
// through in timedCellRequests, which observes each request's latency by kind and counts its failures by
// kind and code. Each process names its own two metrics (createCellRequestMetrics); the labels are the
// same closed sets everywhere: the cell request type, and a cell or client error code ("other" for
// anything outside them, never a string from the wire).
//
// A request of the relay is made per recipient of a joined or receipt event, so this is on the message
// path: the histogram and counter are PlainHistogram and PlainCounter, their cells bound once per kind
// (errors per kind and code on first use, off the fast path), and a request costs two clock reads, a Map
// lookup and a bucket scan.
import { cellErrorCodes, cellRequestTypes, errorCodeList, type CellErrorCode, type CellReply, type CellRequest } from "@cellwire/protocol";
import type { Registry } from "prom-client";
import { CellwireError } from "./errors.ts";
import { PlainCounter, type CounterCell } from "./plain-counter.ts";
import { PlainHistogram, type HistogramCell } from "./plain-histogram.ts";
import type { CellRequester } from "./router.ts";
import { internalLatencyBucketsSeconds } from "./service-metrics.ts";

/** Told of each cell request's end: `errorCode` when it failed (a cell.error reply, or no reply at all). */
export interface CellRequestObserver {
  requestEnded(kind: CellRequest["type"], elapsedMs: number, errorCode: CellErrorCode | undefined): void;
}

/** The label of a kind or a code outside the closed sets (a newer peer's, or a bug). */
const otherLabel = "other";

const knownErrorCodes: ReadonlySet<string> = new Set<string>([...Object.keys(cellErrorCodes), ...errorCodeList]);

/** What timedCellRequests wraps: a Router's (or RunningRouter's) toCell. */
export interface CellRoute {
  toCell(cellId: string, request: CellRequest, deadlineAtMs?: number, traceparent?: string): Promise<CellReply>;
}

/**
 * The requester a Router sends through, made of `route`'s toCell with each request timed on
 * `monotonicNowMs` and told to `observer`: a reply's cell.error code, a CellwireError's code for a request
 * that got no reply (cell_unavailable, deadline_exceeded), or internal for any other throw. cell.moved is
 * a reply, not a failure: the Router follows it. The request's traceparent (docs/decisions/0037) passes through.
 */
export function timedCellRequests(route: CellRoute, observer: CellRequestObserver, monotonicNowMs: () => number): CellRequester {
  return {
    async request(cellId, request, deadlineAtMs, traceparent) {
      const startedAtMs = monotonicNowMs();
      let reply: CellReply;
      try {
        reply = await route.toCell(cellId, request, deadlineAtMs, traceparent);
      } catch (error) {
        observer.requestEnded(request.type, monotonicNowMs() - startedAtMs, error instanceof CellwireError ? error.code : "internal");
        throw error;
      }
      observer.requestEnded(request.type, monotonicNowMs() - startedAtMs, reply.type === "cell.error" ? reply.code : undefined);
      return reply;
    },
  };
}

export type CellRequestMetricNames = {
  /** The latency histogram, by `kind`. */
  readonly durationName: string;
  readonly durationHelp: string;
  /** The failures counter, by `kind` and `code`. */
  readonly errorsName: string;
  readonly errorsHelp: string;
};

type KindCells = { readonly label: string; readonly seconds: HistogramCell; readonly errors: Map<string, CounterCell> };

/** The two metrics in `registry`, a histogram cell bound now per request kind, as an observer. */
export function createCellRequestMetrics(registry: Registry, names: CellRequestMetricNames): CellRequestObserver {
  const seconds = new PlainHistogram({
    name: names.durationName,
    help: names.durationHelp,
    labelName: "kind",
    buckets: internalLatencyBucketsSeconds,
    registry,
  });
  const errors = new PlainCounter({ name: names.errorsName, help: names.errorsHelp, registry, labelNames: ["kind", "code"] });
  const byKind = new Map<string, KindCells>();
  for (const kind of cellRequestTypes) byKind.set(kind, { label: kind, seconds: seconds.cell(kind), errors: new Map() });
  // A kind outside the protocol's set (only an unchecked cast makes one) shows up as "other", bound then.
  const otherKind = (): KindCells => {
    const cells: KindCells = { label: otherLabel, seconds: seconds.cell(otherLabel), errors: new Map() };
    byKind.set(otherLabel, cells);
    return cells;
  };
  return {
    requestEnded(kind, elapsedMs, errorCode) {
      const cells = byKind.get(kind) ?? byKind.get(otherLabel) ?? otherKind();
      cells.seconds.observe(elapsedMs / 1000);
      if (errorCode === undefined) return;
      const code = knownErrorCodes.has(errorCode) ? errorCode : otherLabel;
      let failed = cells.errors.get(code);
      if (failed === undefined) {
        failed = errors.cell(cells.label, code);
        cells.errors.set(code, failed);
      }
      failed.value++;
    },
  };
}
