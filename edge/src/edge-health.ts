// What the edge's /readyz decides on (edge/README.md, "Metrics and health"): NATS and
// accepting sessions take the edge out of the balancer; the directory only informs, since the users in
// the edge's cache keep chatting through a directory outage and pulling every edge out at once would
// stop them too.
import type { ReadinessCheck } from "@cellwire/cluster";

export type EdgeReadinessSources = {
  /** The edge's NATS connection is up (not closed, not between a disconnect and its reconnect). */
  readonly natsConnected: () => boolean;
  /** The edge takes new sessions: not draining, not stopping. */
  readonly accepting: () => boolean;
  /** The directory answered its last probe (DirectoryProbe.reachable: never waits). */
  readonly directoryReachable: () => boolean;
};

export function edgeReadinessChecks(sources: EdgeReadinessSources): ReadinessCheck[] {
  return [
    {
      name: "nats",
      check: () => (sources.natsConnected() ? { ok: true } : { ok: false, detail: "the NATS connection is down; reconnecting" }),
    },
    {
      name: "sessions",
      check: () => (sources.accepting() ? { ok: true } : { ok: false, detail: "the edge is draining or stopping: no new sessions" }),
    },
    {
      name: "directory",
      decidesReadiness: false,
      check: () =>
        sources.directoryReachable()
          ? { ok: true }
          : { ok: false, detail: "the directory did not answer its last probe; users in the edge's cache keep chatting" },
    },
  ];
}

/** How old the directory probe's answer may be before a reader starts the next one. */
export const directoryProbeIntervalMs = 1000;

/**
 * Whether the directory answers, as its last probe found. Reading never waits: it returns the last answer
 * and, when that is older than directoryProbeIntervalMs, starts the next probe in the background. A
 * /readyz that waited for a directory that does not answer would take the directory's timeout (2 s by
 * default), and a balancer's probe timing out takes the edge out, which is what a directory outage must
 * not do. No timer of its own: with nobody reading, nothing is asked; /readyz and /metrics read it.
 */
export class DirectoryProbe {
  private lastResult = false;
  private lastProbedAtMs = Number.NEGATIVE_INFINITY;
  private inFlight: Promise<boolean> | undefined;

  constructor(
    /** One directory request; its failure (or a timeout it enforces) is an unreachable directory. */
    private readonly probe: () => Promise<unknown>,
    private readonly monotonicNowMs: () => number,
  ) {}

  /** The last probe's answer (false before the first); starts the next probe when it is stale. */
  reachable(): boolean {
    if (this.inFlight === undefined && this.monotonicNowMs() - this.lastProbedAtMs >= directoryProbeIntervalMs) void this.refresh();
    return this.lastResult;
  }

  /** Probes now (or joins the probe in flight); resolves with its answer. */
  refresh(): Promise<boolean> {
    this.inFlight ??= this.probe().then(
      () => this.settle(true),
      () => this.settle(false),
    );
    return this.inFlight;
  }

  private settle(result: boolean): boolean {
    this.lastResult = result;
    this.lastProbedAtMs = this.monotonicNowMs();
    this.inFlight = undefined;
    return result;
  }
}
