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
  readonly directoryReachable: () => Promise<boolean>;
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
      check: async () =>
        (await sources.directoryReachable())
          ? { ok: true }
          : { ok: false, detail: "the directory did not answer; users in the edge's cache keep chatting" },
    },
  ];
}

/** How long a directory probe's answer stands: /readyz and /metrics asked together cost one request. */
export const directoryProbeIntervalMs = 1000;

/**
 * Whether the directory answers, asked at most once per directoryProbeIntervalMs (a balancer probing
 * every edge each second must not multiply directory requests), with concurrent askers sharing one probe.
 * No timer of its own: it only asks when someone wants to know.
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

  reachable(): Promise<boolean> {
    if (this.inFlight !== undefined) return this.inFlight;
    if (this.monotonicNowMs() - this.lastProbedAtMs < directoryProbeIntervalMs) return Promise.resolve(this.lastResult);
    const probing = this.probe().then(
      () => true,
      () => false,
    );
    this.inFlight = probing.then((result) => {
      this.lastResult = result;
      this.lastProbedAtMs = this.monotonicNowMs();
      this.inFlight = undefined;
      return result;
    });
    return this.inFlight;
  }
}

/** Follows a NATS connection's status events: down from a disconnect until the reconnect. */
export class NatsLinkState {
  private connected = true;

  get isConnected(): boolean {
    return this.connected;
  }

  statusChanged(type: string): void {
    if (type === "disconnect" || type === "close") this.connected = false;
    else if (type === "reconnect") this.connected = true;
  }
}
