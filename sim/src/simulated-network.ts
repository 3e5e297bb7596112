// Message delivery between the simulated processes, the bucket and the database. While faults are on, a
// request or reply between a process and the bucket or between the edge and a worker may be lost or held
// up, a worker may be cut off from the bucket (not from the database), and a watch may stall. The watch
// is never lossy: the NATS client's ordered consumer notices a missing message and resumes after the last
// one it had, so a loss shows as a stall and entries always arrive in revision order, a cut-off watcher
// getting the backlog once the partition heals.
import type { MembershipWatchEntry } from "@cellwire/cluster";
import type { EventQueue } from "./event-queue.ts";
import type { SeededRandom } from "./seeded-random.ts";

/**
 * What a watch link needs of the process it feeds (SimulatedProcess is one): named here so that the
 * network depends on no process, and the world, which holds both, closes no circle.
 */
export type LinkedProcess = {
  readonly id: string;
  readonly incarnation: number;
  /** Runs `action` in the process, unless the incarnation it was meant for is gone. */
  deliver(incarnation: number, action: () => void): void;
};

export type NetworkSettings = {
  readonly delayMsMin: number;
  readonly delayMsMax: number;
  /** A lossy message (bucket or edge-worker request and reply) is lost, while faults are on. */
  readonly lossProbability: number;
  /** A message is held up by up to spikeDelayMsMax, while faults are on. */
  readonly spikeProbability: number;
  readonly spikeDelayMsMax: number;
  /** A watch entry stalls the watch (an ordered-consumer reset) by up to watchStallMsMax. */
  readonly watchStallProbability: number;
  readonly watchStallMsMax: number;
  /** A database round trip is held up by up to databaseStallMsMax (a slow disk, a lock wait). */
  readonly databaseStallProbability: number;
  readonly databaseStallMsMax: number;
  /** Watch entries held for one cut-off process; more means the run's faults are out of proportion. */
  readonly heldEntriesMax: number;
};

export class SimulatedNetwork {
  private faultsOn = true;
  private readonly partitioned = new Set<string>();
  private readonly links = new Map<string, WatchLink[]>();

  constructor(
    private readonly queue: EventQueue,
    private readonly random: SeededRandom,
    readonly settings: NetworkSettings,
  ) {}

  get faultsActive(): boolean {
    return this.faultsOn;
  }

  /** Ends every fault: nothing is lost or held up from now on; partitions heal. */
  stopFaults(): void {
    this.faultsOn = false;
    for (const processId of [...this.partitioned]) this.heal(processId);
  }

  isPartitioned(processId: string): boolean {
    return this.partitioned.has(processId);
  }

  partition(processId: string): void {
    this.partitioned.add(processId);
  }

  heal(processId: string): void {
    if (!this.partitioned.delete(processId)) return;
    for (const link of this.links.get(processId) ?? []) link.flush();
  }

  /** The delay of one request or reply between `processId` and the bucket; undefined when it is lost. */
  bucketMessageDelayMs(processId: string): number | undefined {
    if (this.partitioned.has(processId)) return undefined;
    return this.lossyDelayMs();
  }

  /** The delay of one request or reply between the edge and a worker; undefined when it is lost. */
  clientMessageDelayMs(): number | undefined {
    return this.lossyDelayMs();
  }

  /** One way to or from the database: never lost (TCP to Postgres), sometimes slow. */
  databaseDelayMs(): number {
    const stall =
      this.faultsOn && this.random.chance(this.settings.databaseStallProbability)
        ? this.random.integer(1, this.settings.databaseStallMsMax)
        : 0;
    return this.baseDelayMs() + stall;
  }

  watchDelayMs(): number {
    const stall =
      this.faultsOn && this.random.chance(this.settings.watchStallProbability) ? this.random.integer(1, this.settings.watchStallMsMax) : 0;
    return this.baseDelayMs() + stall;
  }

  /** Opens the watch link of one process's incarnation; closeLinks drops it when that process dies. */
  openWatchLink(process: LinkedProcess, handle: (entry: MembershipWatchEntry) => void): WatchLink {
    const link = new WatchLink(this, this.queue, process, process.incarnation, handle);
    const links = this.links.get(process.id) ?? [];
    links.push(link);
    this.links.set(process.id, links);
    return link;
  }

  closeLinks(processId: string): void {
    this.links.delete(processId);
  }

  private lossyDelayMs(): number | undefined {
    if (!this.faultsOn) return this.baseDelayMs();
    if (this.random.chance(this.settings.lossProbability)) return undefined;
    const spike = this.random.chance(this.settings.spikeProbability) ? this.random.integer(1, this.settings.spikeDelayMsMax) : 0;
    return this.baseDelayMs() + spike;
  }

  private baseDelayMs(): number {
    return this.random.integer(this.settings.delayMsMin, this.settings.delayMsMax);
  }
}

/** One watch's entries to one process incarnation, in order. */
export class WatchLink {
  private lastArrivalAtMs = 0;
  private held: MembershipWatchEntry[] = [];

  constructor(
    private readonly network: SimulatedNetwork,
    private readonly queue: EventQueue,
    private readonly process: LinkedProcess,
    private readonly incarnation: number,
    private readonly handle: (entry: MembershipWatchEntry) => void,
  ) {}

  send(entry: MembershipWatchEntry): void {
    if (this.network.isPartitioned(this.process.id)) {
      if (this.held.length >= this.network.settings.heldEntriesMax) {
        throw new Error(`more than ${this.network.settings.heldEntriesMax} watch entries held for ${this.process.id}`);
      }
      this.held.push(entry);
      return;
    }
    this.schedule(entry);
  }

  flush(): void {
    const held = this.held;
    this.held = [];
    for (const entry of held) this.schedule(entry);
  }

  private schedule(entry: MembershipWatchEntry): void {
    const arrivalAtMs = Math.max(this.queue.nowMs + this.network.watchDelayMs(), this.lastArrivalAtMs);
    this.lastArrivalAtMs = arrivalAtMs;
    this.queue.at(arrivalAtMs, () => this.process.deliver(this.incarnation, () => this.handle(entry)));
  }
}
