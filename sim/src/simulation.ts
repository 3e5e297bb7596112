// One seeded run of a cell: workers holding leases in a simulated membership bucket, an edge routing
// client writes to key owners, a database fencing by epoch. A fault phase (pauses, crashes and restarts,
// partitions from the bucket, half of them noticed by the worker as a dropped NATS connection (0041),
// joins and leaves, lost and delayed messages, slow statements) with safety
// checked at every commit and acknowledgement; then a healing phase (faults stop, paused workers resume,
// crashed ones restart) in which, within a bounded simulated time, every live process must agree on one
// ring of exactly the live workers, and a write to every key must succeed. Same seed, same run.
import { leaseExpiryCheckIntervalMs, type MembershipSnapshot } from "@cellwire/cluster";
import { EventQueue } from "./event-queue.ts";
import { SafetyChecker, type Violation } from "./safety-checker.ts";
import { SeededRandom } from "./seeded-random.ts";
import { SimulatedBucket } from "./simulated-bucket.ts";
import { SimulatedDatabase } from "./simulated-database.ts";
import { SimulatedEdge } from "./simulated-edge.ts";
import { SimulatedNetwork } from "./simulated-network.ts";
import type { SimulatedProcess } from "./simulated-process.ts";
import { SimulatedWorker } from "./simulated-worker.ts";
import { Trace } from "./trace.ts";
import type { SimulationSettings, World } from "./world.ts";

/** The worker's defaults (cells/src/config.ts: WORKER_LEASE_MS, WORKER_HEARTBEAT_INTERVAL_MS). */
const leaseMs = 1500;
const heartbeatIntervalMs = 300;

export const defaultSimulationSettings: SimulationSettings = {
  cellId: "a",
  leaseMs,
  heartbeatIntervalMs,
  expiryCheckIntervalMs: leaseExpiryCheckIntervalMs(leaseMs),
  readyDeadlineMs: 2000,
  bucketMaxAgeMs: leaseMs * 10,
  // The NATS client's JetStream request timeout (a put, a delete, a get, the watch's consumer).
  bucketRequestTimeoutMs: 5000,
  storeCallDelayMs: 1,
  clientRequestTimeoutMs: 2000,
  retryBackoff: { initialDelayMs: 50, maxDelayMs: 1000, multiplier: 2 },
  writeAttemptsMax: 8,
  writeThinkMsMax: 200,
  misrouteProbability: 0.05,
  keyCount: 16,
  writerCount: 4,
  pendingPerKeyMax: 16,
  pendingTotalMax: 256,
  workersInitial: 3,
  workersMax: 6,
  workersStayingMin: 2,
  wallClockSkewMsMax: 200,
  tickMs: 100,
  faults: {
    pauseProbability: 0.012,
    pauseMsMax: 3 * leaseMs,
    crashProbability: 0.006,
    downMsMax: 2 * leaseMs,
    partitionProbability: 0.008,
    partitionMsMax: 3 * leaseMs,
    joinProbability: 0.005,
    leaveProbability: 0.004,
    storeCallPauseProbability: 0.01,
  },
  network: {
    delayMsMin: 1,
    delayMsMax: 15,
    lossProbability: 0.01,
    spikeProbability: 0.01,
    spikeDelayMsMax: 1500,
    watchStallProbability: 0.005,
    watchStallMsMax: 2500,
    databaseStallProbability: 0.01,
    databaseStallMsMax: 2 * leaseMs,
    heldEntriesMax: 100_000,
  },
  convergenceDeadlineMs: 15_000,
  livenessWriteDeadlineMs: 10_000,
  pausedBacklogMax: 100_000,
  eventsMax: 5_000_000,
};

export type SimulationOptions = {
  readonly seed: number;
  /** Ticks of the fault phase, each settings.tickMs of simulated time. */
  readonly steps?: number;
  /** False plants a bug: the database commits whatever the epoch. */
  readonly fenceEnabled?: boolean;
  /** False plants a bug: a write's turn re-checks the lease but not ownership on the current ring. */
  readonly ownershipRecheckEnabled?: boolean;
  readonly settings?: SimulationSettings;
  readonly traceCapacity?: number;
};

export const defaultSteps = 400;

export type LivenessResult = {
  readonly checked: boolean;
  /** Simulated time from healing until every live process agreed on the ring of the live workers. */
  readonly convergedAfterMs: number | undefined;
  /**
   * The epochs the live processes held for that ring. A watcher that started after the last change of
   * the ring counted its replay as changes (MembershipView.raiseEpoch), so it may hold a higher epoch for
   * the same ring until the next change: not a failure (every epoch names that one ring, checked above).
   */
  readonly epochs: readonly number[];
  readonly keysAcknowledged: number;
  readonly keysTotal: number;
  readonly failure: string | undefined;
};

export type SimulationResult = {
  readonly seed: number;
  readonly steps: number;
  readonly ok: boolean;
  readonly violations: readonly Violation[];
  readonly liveness: LivenessResult;
  readonly stats: {
    readonly simulatedMs: number;
    readonly events: number;
    readonly commits: number;
    readonly fenced: number;
    readonly acknowledged: number;
    readonly abandonedWrites: number;
    readonly refusedNotOwner: number;
    readonly refusedLeaseLapsed: number;
    readonly epochs: number;
    readonly faults: Readonly<Record<FaultKind, number>>;
  };
  /** The end of the run's trace, oldest first. */
  readonly trace: readonly string[];
};

type FaultKind = "pause" | "crash" | "partition" | "join" | "leave" | "storeCallPause";

const warmUpMs = 1000;
const livenessPollMs = 100;
/** Lines of the trace a result carries: enough to see the faults that led to a violation. */
const traceTailLines = 400;

export function runSimulation(options: SimulationOptions): SimulationResult {
  return new Simulation(options).run();
}

class Simulation {
  private readonly world: World;
  private readonly steps: number;
  private readonly workers = new Map<string, SimulatedWorker>();
  private readonly edge: SimulatedEdge;
  private readonly keys: string[];
  private nextWorkerNumber = 1;
  private readonly pauseTokens = new Map<string, number>();
  private readonly restartTokens = new Map<string, number>();
  private readonly partitionTokens = new Map<string, number>();
  /** Workers whose NATS client noticed their cut from the bucket, until it heals. */
  private readonly disconnected = new Set<SimulatedWorker>();
  private readonly epochsSeen = new Set<number>();
  private readonly lastPublished = new Map<string, string>();
  private readonly faultCounts: Record<FaultKind, number> = { pause: 0, crash: 0, partition: 0, join: 0, leave: 0, storeCallPause: 0 };
  private stuck: string | undefined;

  constructor(options: SimulationOptions) {
    const settings = options.settings ?? defaultSimulationSettings;
    this.steps = options.steps ?? defaultSteps;
    const queue = new EventQueue();
    const random = new SeededRandom(options.seed);
    const checker = new SafetyChecker();
    const trace = new Trace(options.traceCapacity ?? 400);
    const database = new SimulatedDatabase({ fenceEnabled: options.fenceEnabled ?? true }, (commit) => {
      trace.record(
        commit.atMs,
        `database: ${commit.key} seq ${commit.seq} committed by ${commit.workerId} under epoch ${commit.epoch} (${commit.writeId})`,
      );
      checker.onCommit(commit);
    });
    this.world = {
      queue,
      random,
      bucket: new SimulatedBucket(queue, settings.bucketMaxAgeMs),
      database,
      network: new SimulatedNetwork(queue, random, settings.network),
      checker,
      trace,
      settings,
      ownershipRecheckEnabled: options.ownershipRecheckEnabled ?? true,
    };
    this.keys = Array.from({ length: settings.keyCount }, (_, index) => `g-${index}`);
    this.edge = new SimulatedEdge(
      "edge-1",
      this.world,
      this.skewMs(),
      this.keys,
      (workerId) => this.workers.get(workerId),
      (watcherId, snapshot) => this.onPublished(watcherId, snapshot),
    );
  }

  run(): SimulationResult {
    const { queue, settings } = this.world;
    this.edge.start();
    for (let index = 0; index < settings.workersInitial; index++) this.join();
    queue.after(warmUpMs, () => this.edge.startWriting(settings.writerCount));
    const faultPhaseEndsAtMs = warmUpMs + this.steps * settings.tickMs;
    const tick = (step: number): void => {
      this.injectFaults();
      if (step + 1 < this.steps) queue.after(settings.tickMs, () => tick(step + 1));
    };
    queue.at(warmUpMs, () => tick(0));
    this.runUntil(faultPhaseEndsAtMs);
    let liveness: LivenessResult = {
      checked: false,
      convergedAfterMs: undefined,
      epochs: [],
      keysAcknowledged: 0,
      keysTotal: this.keys.length,
      failure: undefined,
    };
    if (!this.world.checker.failed && this.stuck === undefined) {
      this.heal();
      liveness = this.checkLiveness(queue.nowMs);
    }
    this.world.checker.checkAllAcknowledged(this.world.database, queue.nowMs);
    const violations = this.world.checker.violations;
    const failure = liveness.failure ?? this.stuck;
    const refusals = [...this.workers.values()].map((worker) => worker.refusals);
    return {
      seed: this.world.random.seed,
      steps: this.steps,
      ok: violations.length === 0 && failure === undefined && liveness.checked,
      violations,
      liveness: { ...liveness, failure },
      stats: {
        simulatedMs: queue.nowMs,
        events: queue.executed,
        commits: this.world.database.commits,
        fenced: this.world.database.fenced,
        acknowledged: this.edge.stats.acknowledged,
        abandonedWrites: this.edge.stats.abandoned,
        refusedNotOwner: refusals.reduce((sum, counts) => sum + counts.refusedNotOwner, 0),
        refusedLeaseLapsed: refusals.reduce((sum, counts) => sum + counts.refusedLeaseLapsed, 0),
        epochs: this.epochsSeen.size,
        faults: { ...this.faultCounts },
      },
      trace: this.world.trace.tail(traceTailLines),
    };
  }

  /** Runs events up to `untilMs`, stopping at the first safety violation or past the event budget. */
  private runUntil(untilMs: number): void {
    const { queue, checker, settings } = this.world;
    if (checker.failed || this.stuck !== undefined) return;
    const outcome = queue.runUntil(untilMs, settings.eventsMax - queue.executed, () => checker.failed);
    if (outcome === "budget") this.stuck = `more than ${settings.eventsMax} events by ${queue.nowMs} ms: the run does not settle`;
  }

  private injectFaults(): void {
    const { random, settings } = this.world;
    const { faults } = settings;
    const workers = [...this.workers.values()];
    if (random.chance(faults.pauseProbability)) {
      const candidates = workers.filter((worker) => worker.alive && !worker.paused);
      if (candidates.length > 0) this.pauseFor(random.pick(candidates), random.integer(100, faults.pauseMsMax), "pause");
    }
    if (random.chance(faults.crashProbability)) {
      const candidates = workers.filter(
        (worker) => worker.state === "starting" || worker.state === "serving" || worker.state === "stopping",
      );
      if (candidates.length > 0) {
        const worker = random.pick(candidates);
        this.faultCounts.crash++;
        this.note(`fault: crash ${worker.id}`);
        worker.crash();
        this.restartLater(worker);
      }
    }
    if (random.chance(faults.partitionProbability)) {
      const candidates: SimulatedProcess[] = [this.edge, ...workers.filter((worker) => worker.alive)].filter(
        (process) => !this.world.network.isPartitioned(process.id),
      );
      if (candidates.length > 0) this.partitionFor(random.pick(candidates), random.integer(100, faults.partitionMsMax));
    }
    if (random.chance(faults.joinProbability) && workers.filter((worker) => worker.state !== "left").length < settings.workersMax) {
      this.faultCounts.join++;
      this.join();
    }
    if (random.chance(faults.leaveProbability)) {
      const staying = workers.filter((worker) => worker.state !== "left" && worker.state !== "stopping");
      const candidates = staying.filter((worker) => worker.state === "serving");
      if (staying.length > settings.workersStayingMin && candidates.length > 0) {
        const worker = random.pick(candidates);
        this.faultCounts.leave++;
        this.note(`fault: ${worker.id} leaves`);
        worker.leave();
      }
    }
  }

  private join(): void {
    const worker = new SimulatedWorker(`${this.world.settings.cellId}-${this.nextWorkerNumber++}`, this.world, this.skewMs(), {
      published: (watcherId, snapshot) => this.onPublished(watcherId, snapshot),
      down: (down) => this.restartLater(down),
      beforeStoreCall: (writer) => {
        const { random, settings, network } = this.world;
        if (network.faultsActive && random.chance(settings.faults.storeCallPauseProbability)) {
          this.pauseFor(writer, random.integer(settings.leaseMs, 3 * settings.leaseMs), "storeCallPause");
        }
      },
    });
    this.workers.set(worker.id, worker);
    this.note(`${worker.id} joins`);
    this.world.queue.after(this.world.random.integer(0, 200), () => worker.start());
  }

  private pauseFor(process: SimulatedProcess, durationMs: number, kind: "pause" | "storeCallPause"): void {
    const token = (this.pauseTokens.get(process.id) ?? 0) + 1;
    this.pauseTokens.set(process.id, token);
    this.faultCounts[kind]++;
    this.note(`fault: pause ${process.id} for ${durationMs} ms${kind === "storeCallPause" ? " with a statement in hand" : ""}`);
    process.pause();
    this.world.queue.after(durationMs, () => {
      if (this.pauseTokens.get(process.id) !== token) return;
      this.note(`${process.id} resumes`);
      process.resume();
    });
  }

  private partitionFor(process: SimulatedProcess, durationMs: number): void {
    const token = (this.partitionTokens.get(process.id) ?? 0) + 1;
    this.partitionTokens.set(process.id, token);
    this.faultCounts.partition++;
    this.note(`fault: cut ${process.id} off the bucket for ${durationMs} ms`);
    this.world.network.partition(process.id);
    // A worker's NATS client notices half of its cuts (a reset connection, missed pings) at some moment
    // within it, and the other half not at all (a cut that heals before a ping is missed): a worker that
    // noticed judges no lease until the cut heals, then counts every lease from then (decision 0041).
    const worker = this.workers.get(process.id);
    if (worker !== undefined && this.world.random.chance(0.5)) {
      this.world.queue.after(this.world.random.integer(0, durationMs - 1), () => {
        if (this.partitionTokens.get(process.id) !== token) return;
        this.disconnected.add(worker);
        worker.connectionLost();
      });
    }
    this.world.queue.after(durationMs, () => {
      if (this.partitionTokens.get(process.id) !== token) return;
      this.note(`${process.id} reaches the bucket again`);
      this.world.network.heal(process.id);
      this.reconnect(worker);
    });
  }

  /** A worker that noticed its cut is told the connection is back (a cut healed, or every cut at the healing). */
  private reconnect(worker: SimulatedWorker | undefined): void {
    if (worker === undefined || !this.disconnected.delete(worker)) return;
    worker.connectionRestored();
  }

  private restartLater(worker: SimulatedWorker): void {
    const token = (this.restartTokens.get(worker.id) ?? 0) + 1;
    this.restartTokens.set(worker.id, token);
    const { random, settings, network } = this.world;
    const delayMs = network.faultsActive ? random.integer(200, settings.faults.downMsMax) : random.integer(0, 200);
    this.world.queue.after(delayMs, () => {
      if (this.restartTokens.get(worker.id) !== token) return;
      worker.start();
    });
  }

  /** Faults stop: no more losses, stalls or partitions; paused workers resume; crashed ones restart. */
  private heal(): void {
    const { network } = this.world;
    this.note("healing: faults stop");
    network.stopFaults();
    for (const worker of [...this.disconnected]) this.reconnect(worker);
    this.edge.stopWriting();
    for (const id of [...this.pauseTokens.keys()]) this.pauseTokens.set(id, (this.pauseTokens.get(id) ?? 0) + 1);
    this.edge.resume();
    for (const worker of this.workers.values()) {
      worker.resume();
      if (worker.state === "down") this.restartLater(worker);
    }
  }

  private checkLiveness(healedAtMs: number): LivenessResult {
    const { queue, settings } = this.world;
    const keysTotal = this.keys.length;
    const convergeBy = healedAtMs + settings.convergenceDeadlineMs;
    let disagreement = this.disagreement();
    while (disagreement !== undefined && queue.nowMs < convergeBy) {
      this.runUntil(Math.min(convergeBy, queue.nowMs + livenessPollMs));
      if (this.world.checker.failed || this.stuck !== undefined) {
        return { checked: false, convergedAfterMs: undefined, epochs: [], keysAcknowledged: 0, keysTotal, failure: undefined };
      }
      disagreement = this.disagreement();
    }
    if (disagreement !== undefined) {
      const failure = `no agreement ${settings.convergenceDeadlineMs} ms after healing: ${disagreement}`;
      this.note(`liveness: ${failure}`);
      return { checked: true, convergedAfterMs: undefined, epochs: [], keysAcknowledged: 0, keysTotal, failure };
    }
    const convergedAfterMs = queue.nowMs - healedAtMs;
    const epochs = [...new Set(this.liveViews().map(({ snapshot }) => snapshot?.ringEpoch ?? 0))].sort((left, right) => left - right);
    this.note(`liveness: every process agrees on the ring ${convergedAfterMs} ms after healing; writing every key`);
    let acknowledgedKeys: ReadonlySet<string> | undefined;
    this.edge.writeEveryKey((keys) => {
      acknowledgedKeys = keys;
    });
    const writesBy = queue.nowMs + settings.livenessWriteDeadlineMs;
    while (acknowledgedKeys === undefined && queue.nowMs < writesBy && !this.world.checker.failed && this.stuck === undefined) {
      this.runUntil(Math.min(writesBy, queue.nowMs + livenessPollMs));
    }
    const keysAcknowledged = acknowledgedKeys?.size ?? 0;
    const failure =
      keysAcknowledged === keysTotal
        ? undefined
        : `${keysTotal - keysAcknowledged} of ${keysTotal} keys not written within ${settings.livenessWriteDeadlineMs} ms after agreement`;
    if (failure !== undefined) this.note(`liveness: ${failure}`);
    return { checked: true, convergedAfterMs, epochs, keysAcknowledged, keysTotal, failure };
  }

  /**
   * Why the live processes do not (yet) agree on one ring of exactly the live workers, each of them
   * serving on a renewed lease; undefined once they do (then every key has one owner everyone agrees on).
   */
  private disagreement(): string | undefined {
    const live = this.liveWorkers();
    const expected = live
      .map((worker) => worker.id)
      .sort()
      .join(",");
    for (const worker of live) {
      if (!worker.servesOnItsLease()) return `${worker.id} is ${worker.state}${worker.paused ? " (paused)" : ""} without a renewed lease`;
    }
    for (const { id, snapshot } of this.liveViews()) {
      if (snapshot === undefined) return `${id} has no ring yet`;
      const members = snapshot.ring.members.join(",");
      if (members !== expected) return `${id} sees [${members}], the live workers are [${expected}]`;
    }
    return undefined;
  }

  private liveWorkers(): SimulatedWorker[] {
    return [...this.workers.values()].filter((worker) => worker.state !== "left");
  }

  private liveViews(): { readonly id: string; readonly snapshot: MembershipSnapshot | undefined }[] {
    return [
      { id: this.edge.id, snapshot: this.edge.snapshot },
      ...this.liveWorkers().map((worker) => ({ id: worker.id, snapshot: worker.snapshot })),
    ];
  }

  private onPublished(watcherId: string, snapshot: MembershipSnapshot): void {
    const { checker, queue, trace } = this.world;
    const members = snapshot.ring.members;
    checker.onPublish(watcherId, snapshot.ringEpoch, members, queue.nowMs);
    this.epochsSeen.add(snapshot.ringEpoch);
    const described = `epoch ${snapshot.ringEpoch} [${members.join(",")}]`;
    if (this.lastPublished.get(watcherId) === described) return;
    this.lastPublished.set(watcherId, described);
    trace.record(queue.nowMs, `${watcherId}: ring ${described}`);
  }

  private skewMs(): number {
    const skewMax = this.world.settings.wallClockSkewMsMax;
    return this.world.random.integer(-skewMax, skewMax);
  }

  private note(text: string): void {
    this.world.trace.record(this.world.queue.nowMs, text);
  }
}
