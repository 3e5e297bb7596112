// An edge: its CellRouter watches the cell's membership (a watcher like any other, deleting expired
// leases too) and sends each write to the owner of its key on the router's ring, retrying with a jittered
// backoff when the owner is unknown, refuses, leaves the ring, or does not answer in time; a retry keeps
// the write id, so the database answers a write that did commit with its stored seq. Writers inside the
// edge stand for clients: each sends one write at a time, to a random key.
import { backoffDelayMs } from "@cellwire/cluster";
import type { MembershipSnapshot } from "@cellwire/cluster";
import { SimulatedProcess } from "./simulated-process.ts";
import { SimulatedWatcher } from "./simulated-watcher.ts";
import type { SimulatedWorker, WriteReply } from "./simulated-worker.ts";
import type { World } from "./world.ts";

type ClientWrite = {
  readonly writeId: string;
  readonly key: string;
  readonly attemptsMax: number;
  attempts: number;
  /** The attempt in flight (0: none); replies and timeouts of other attempts are ignored. */
  attemptId: number;
  target: string | undefined;
  readonly finished: (acknowledged: boolean) => void;
};

export type EdgeCounts = { acknowledged: number; abandoned: number; attempts: number; timedOut: number };

export class SimulatedEdge extends SimulatedProcess {
  private watcher: SimulatedWatcher | undefined;
  private watcherReady = false;
  private writing = false;
  private nextAttemptId = 1;
  private nextWriteNumber = 1;
  private readonly inFlight = new Set<ClientWrite>();
  private readonly counts: EdgeCounts = { acknowledged: 0, abandoned: 0, attempts: 0, timedOut: 0 };

  constructor(
    id: string,
    world: World,
    wallClockSkewMs: number,
    private readonly keys: readonly string[],
    private readonly workerById: (workerId: string) => SimulatedWorker | undefined,
    private readonly published: (watcherId: string, snapshot: MembershipSnapshot) => void,
  ) {
    super(id, world, wallClockSkewMs);
  }

  get snapshot(): MembershipSnapshot | undefined {
    return this.watcherReady ? this.watcher?.snapshot : undefined;
  }

  get stats(): Readonly<EdgeCounts> {
    return this.counts;
  }

  start(): void {
    this.boot();
    this.startWatcher();
  }

  /** Starts `writerCount` clients, each writing to random keys until stopWriting(). */
  startWriting(writerCount: number): void {
    this.writing = true;
    for (let writer = 0; writer < writerCount; writer++)
      this.after(this.world.random.integer(0, this.world.settings.writeThinkMsMax), () => this.writeOnce(writer));
  }

  /** Clients finish the write in hand and start no other. */
  stopWriting(): void {
    this.writing = false;
  }

  /** One write to each key, retried until acknowledged; `finished` gets the keys acknowledged. */
  writeEveryKey(finished: (acknowledgedKeys: ReadonlySet<string>) => void): void {
    const acknowledgedKeys = new Set<string>();
    let remaining = this.keys.length;
    for (const key of this.keys) {
      this.send({
        writeId: `liveness-${key}`,
        key,
        attemptsMax: Number.POSITIVE_INFINITY,
        attempts: 0,
        attemptId: 0,
        target: undefined,
        finished: (acknowledged) => {
          if (acknowledged) acknowledgedKeys.add(key);
          remaining--;
          if (remaining === 0) finished(acknowledgedKeys);
        },
      });
    }
  }

  private startWatcher(): void {
    this.watcherReady = false;
    const watcher = new SimulatedWatcher(this.world, this, {
      started: () => undefined,
      ready: () => {
        this.watcherReady = true;
      },
      // The router drops a watcher that failed to start and makes a new one for the next request.
      failed: (why) => {
        this.world.trace.record(this.world.queue.nowMs, `${this.id}: watcher failed: ${why}; starting another`);
        watcher.stop();
        this.after(this.world.settings.retryBackoff.maxDelayMs, () => this.startWatcher());
      },
      published: (snapshot) => {
        this.published(this.id, snapshot);
        this.abandonAttemptsToDeparted(snapshot);
      },
    });
    this.watcher = watcher;
    watcher.start();
  }

  private writeOnce(writer: number): void {
    if (!this.writing) return;
    const writeId = `c${writer}-${this.nextWriteNumber++}`;
    this.send({
      writeId,
      key: this.world.random.pick(this.keys),
      attemptsMax: this.world.settings.writeAttemptsMax,
      attempts: 0,
      attemptId: 0,
      target: undefined,
      finished: () => this.after(this.world.random.integer(0, this.world.settings.writeThinkMsMax), () => this.writeOnce(writer)),
    });
  }

  private send(write: ClientWrite): void {
    const { random, settings, network, queue } = this.world;
    write.attempts++;
    this.counts.attempts++;
    const ring = this.snapshot?.ring;
    const members = ring?.members ?? [];
    const misrouted = network.faultsActive && members.length > 0 && random.chance(settings.misrouteProbability);
    const target = misrouted ? random.pick(members) : ring?.ownerOf(write.key);
    if (target === undefined) return this.retryLater(write);
    const attemptId = this.nextAttemptId++;
    write.attemptId = attemptId;
    write.target = target;
    this.inFlight.add(write);
    this.after(settings.clientRequestTimeoutMs, () => {
      if (write.attemptId !== attemptId) return;
      this.counts.timedOut++;
      this.retryLater(write);
    });
    const requestDelayMs = network.clientMessageDelayMs();
    if (requestDelayMs === undefined) return;
    const incarnation = this.incarnation;
    queue.after(requestDelayMs, () => {
      const worker = this.workerById(target);
      if (worker === undefined) return;
      worker.deliver(worker.incarnation, () =>
        worker.receive({ writeId: write.writeId, key: write.key }, (reply) => {
          const replyDelayMs = network.clientMessageDelayMs();
          if (replyDelayMs === undefined) return;
          queue.after(replyDelayMs, () => this.deliver(incarnation, () => this.onReply(write, attemptId, reply)));
        }),
      );
    });
  }

  private onReply(write: ClientWrite, attemptId: number, reply: WriteReply): void {
    if (write.attemptId !== attemptId) return;
    if (reply.kind === "refused") return this.retryLater(write);
    write.attemptId = 0;
    this.inFlight.delete(write);
    this.counts.acknowledged++;
    this.world.checker.onAcknowledged(write.writeId, write.key, reply.seq, this.world.database, this.world.queue.nowMs);
    write.finished(true);
  }

  private retryLater(write: ClientWrite): void {
    write.attemptId = 0;
    this.inFlight.delete(write);
    if (write.attempts >= write.attemptsMax) {
      this.counts.abandoned++;
      write.finished(false);
      return;
    }
    const delayMs = backoffDelayMs(this.world.settings.retryBackoff, write.attempts - 1, () => this.world.random.next());
    this.after(delayMs, () => this.send(write));
  }

  /** CellRouter ends an attempt as soon as its target leaves the ring, rather than wait for its timeout. */
  private abandonAttemptsToDeparted(snapshot: MembershipSnapshot): void {
    for (const write of [...this.inFlight]) {
      if (write.target !== undefined && !snapshot.subjects.has(write.target)) this.retryLater(write);
    }
  }
}
