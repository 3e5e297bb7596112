// A cell worker as cells/src/worker.ts and request-handler.ts run it, reduced to membership, ownership
// and fenced writes, over the simulated bucket, network and database. Start: the watcher (ready), then
// requests are taken, then the first lease renewal (until it succeeds the worker counts its lease as held,
// as worker.ts does), then a renewal every heartbeat (skipped while one is in flight). A request is
// refused when the lease lapsed or the ring gives its key to another worker, queued behind the key's
// earlier requests, and when its turn comes checked again (lease, and ownership on the current ring,
// whose epoch the write then carries) before its statement goes to the database. A graceful stop drains
// the queues, deletes the lease, then stops the watcher.
import { encodeJson, LeaseTerm, type MembershipSnapshot } from "@cellwire/cluster";
import type { DatabaseWriteResult } from "./simulated-database.ts";
import { SimulatedProcess, type Interval } from "./simulated-process.ts";
import { SimulatedWatcher } from "./simulated-watcher.ts";
import type { World } from "./world.ts";

export type WriteRequest = { readonly writeId: string; readonly key: string };
export type RefusalReason = "not_owner" | "lease_lapsed" | "overloaded" | "fenced";
export type WriteReply =
  | { readonly kind: "stored"; readonly seq: number; readonly deduplicated: boolean }
  | { readonly kind: "refused"; readonly reason: RefusalReason };

export type WorkerState = "down" | "starting" | "serving" | "stopping" | "left";

export type WorkerHooks = {
  /** The worker's watcher published a snapshot. */
  readonly published: (watcherId: string, snapshot: MembershipSnapshot) => void;
  /** The worker died (a failed start): the simulation decides when it restarts. */
  readonly down: (worker: SimulatedWorker) => void;
  /** A write about to reach the database may pause the worker (the fencing scenario). */
  readonly beforeStoreCall: (worker: SimulatedWorker) => void;
};

type PendingWrite = { readonly request: WriteRequest; readonly respond: (reply: WriteReply) => void };

export type WorkerCounts = {
  refusedNotOwner: number;
  refusedLeaseLapsed: number;
  refusedOverloaded: number;
  fenced: number;
  stored: number;
};

export class SimulatedWorker extends SimulatedProcess {
  private stateValue: WorkerState = "down";
  private watcher: SimulatedWatcher | undefined;
  private watcherStarted = false;
  private watcherReady = false;
  /** Unset until the first renewal succeeded: worker.ts counts the lease as held until then. */
  private leaseTerm: LeaseTerm | undefined;
  private renewing = false;
  private heartbeat: Interval | undefined;
  /** Per key, the requests queued; the first one is running. */
  private readonly queues = new Map<string, PendingWrite[]>();
  private pendingTotal = 0;
  private leaseDeleteStarted = false;
  /** The lease's startedAtMs: this incarnation's start by its wall clock. */
  private leaseStartedAtMs = 0;
  private readonly counts: WorkerCounts = { refusedNotOwner: 0, refusedLeaseLapsed: 0, refusedOverloaded: 0, fenced: 0, stored: 0 };

  constructor(
    id: string,
    world: World,
    wallClockSkewMs: number,
    private readonly hooks: WorkerHooks,
  ) {
    super(id, world, wallClockSkewMs);
  }

  get state(): WorkerState {
    return this.stateValue;
  }

  get snapshot(): MembershipSnapshot | undefined {
    return this.watcher?.snapshot;
  }

  get refusals(): Readonly<WorkerCounts> {
    return this.counts;
  }

  /** What the request handler asks (worker.ts: no lease holder yet, or its lease renewed in time). */
  leaseHeld(): boolean {
    return this.leaseTerm === undefined || this.leaseTerm.holds(this.monotonicNowMs());
  }

  /** Serving on a lease renewed in time (not merely before its first renewal). */
  servesOnItsLease(): boolean {
    return this.stateValue === "serving" && this.leaseTerm !== undefined && this.leaseTerm.holds(this.monotonicNowMs()) && !this.paused;
  }

  start(): void {
    if (this.stateValue !== "down") return;
    this.boot();
    this.stateValue = "starting";
    this.watcherStarted = false;
    this.watcherReady = false;
    this.leaseTerm = undefined;
    this.renewing = false;
    this.heartbeat = undefined;
    this.queues.clear();
    this.pendingTotal = 0;
    this.leaseDeleteStarted = false;
    this.leaseStartedAtMs = Math.max(0, Math.round(this.wallNowMs()));
    this.note("starting");
    this.watcher = new SimulatedWatcher(this.world, this, {
      started: () => {
        this.watcherStarted = true;
        this.serveWhenReady();
      },
      ready: () => {
        this.watcherReady = true;
        this.serveWhenReady();
      },
      failed: (why) => this.failStart(why),
      published: (snapshot) => this.hooks.published(this.id, snapshot),
    });
    this.watcher.start();
  }

  /** Killed (SIGKILL, a machine lost): statements already sent to the database still run. */
  crash(): void {
    if (this.stateValue === "down" || this.stateValue === "left") return;
    this.note("crashed");
    this.becomeDown();
  }

  /** Its NATS client noticed the connection drop (watchersFollowConnection): its watcher judges no lease meanwhile. */
  connectionLost(): void {
    this.deliver(this.incarnation, () => {
      this.note("NATS connection lost");
      this.watcher?.connectionLost();
    });
  }

  /** The connection is back: leases count from now (watchersFollowConnection), and the lease is renewed at once (worker-lease.ts). */
  connectionRestored(): void {
    this.deliver(this.incarnation, () => {
      this.note("NATS connection restored");
      this.watcher?.connectionRestored();
      this.renewQuietly();
    });
  }

  /** A graceful stop (SIGTERM). */
  leave(): void {
    // startWorker() resolves, and so stop() can be called, only once the first renewal succeeded.
    if (this.stateValue !== "serving" || this.leaseTerm === undefined) return;
    this.stateValue = "stopping";
    this.note("stopping");
    this.finishLeavingWhenIdle();
  }

  /** A request from the edge, delivered in this process. */
  receive(request: WriteRequest, respond: (reply: WriteReply) => void): void {
    // Not subscribed yet, or drained: nobody answers, and the router's attempt times out.
    if (this.stateValue !== "serving") return;
    if (!this.leaseHeld()) return this.refuse(respond, "lease_lapsed");
    const owner = this.snapshot?.ring.ownerOf(request.key);
    if (owner !== undefined && owner !== this.id) return this.refuse(respond, "not_owner");
    const queue = this.queues.get(request.key) ?? [];
    if (queue.length >= this.world.settings.pendingPerKeyMax || this.pendingTotal >= this.world.settings.pendingTotalMax) {
      return this.refuse(respond, "overloaded");
    }
    queue.push({ request, respond });
    this.queues.set(request.key, queue);
    this.pendingTotal++;
    if (queue.length === 1) this.runTurn(request.key);
  }

  private serveWhenReady(): void {
    if (this.stateValue !== "starting" || !this.watcherStarted || !this.watcherReady) return;
    this.stateValue = "serving";
    const startedAtMs = this.monotonicNowMs();
    this.requestBucket(
      (bucket) => bucket.put(this.leaseKey(), this.leaseValue()),
      () => {
        const term = new LeaseTerm(this.world.settings.leaseMs);
        term.renewed(startedAtMs);
        this.leaseTerm = term;
        this.heartbeat = this.every(this.world.settings.heartbeatIntervalMs, () => this.renewQuietly());
        this.note("serving");
      },
      (why) => this.failStart(`first lease renewal: ${why}`),
    );
  }

  private renewQuietly(): void {
    if (this.renewing || this.leaseTerm === undefined) return;
    this.renewing = true;
    const term = this.leaseTerm;
    const startedAtMs = this.monotonicNowMs();
    this.requestBucket(
      (bucket) => bucket.put(this.leaseKey(), this.leaseValue()),
      () => {
        term.renewed(startedAtMs);
        this.renewing = false;
      },
      (why) => {
        this.note(`lease renewal failed: ${why}`);
        this.renewing = false;
      },
    );
  }

  private runTurn(key: string): void {
    const pending = this.queues.get(key)?.[0];
    if (pending === undefined) {
      this.queues.delete(key);
      this.finishLeavingWhenIdle();
      return;
    }
    // The request handler's writeEpoch: the lease and the ring read now, not when the request arrived.
    if (!this.leaseHeld()) return this.finishTurn(key, { kind: "refused", reason: "lease_lapsed" });
    const snapshot = this.snapshot;
    if (snapshot === undefined) return this.finishTurn(key, { kind: "refused", reason: "not_owner" });
    if (this.world.ownershipRecheckEnabled && snapshot.ring.ownerOf(key) !== this.id) {
      return this.finishTurn(key, { kind: "refused", reason: "not_owner" });
    }
    const epoch = snapshot.ringEpoch;
    this.hooks.beforeStoreCall(this);
    this.after(this.world.settings.storeCallDelayMs, () => this.callStore(key, pending, epoch));
  }

  private callStore(key: string, pending: PendingWrite, epoch: number): void {
    const { queue, network, database } = this.world;
    const incarnation = this.incarnation;
    queue.after(network.databaseDelayMs(), () => {
      const result = database.write({ key, writeId: pending.request.writeId, workerId: this.id, epoch }, queue.nowMs);
      if (result.outcome === "fenced") this.note(`fenced on ${key}: written under an epoch after ${epoch}`);
      queue.after(network.databaseDelayMs(), () => this.deliver(incarnation, () => this.finishTurn(key, toReply(result))));
    });
  }

  private finishTurn(key: string, reply: WriteReply): void {
    const queue = this.queues.get(key);
    const pending = queue?.shift();
    if (pending === undefined) return;
    this.pendingTotal--;
    this.count(reply);
    pending.respond(reply);
    this.runTurn(key);
  }

  private refuse(respond: (reply: WriteReply) => void, reason: RefusalReason): void {
    const reply: WriteReply = { kind: "refused", reason };
    this.count(reply);
    respond(reply);
  }

  private count(reply: WriteReply): void {
    if (reply.kind === "stored") this.counts.stored++;
    else if (reply.reason === "not_owner") this.counts.refusedNotOwner++;
    else if (reply.reason === "lease_lapsed") this.counts.refusedLeaseLapsed++;
    else if (reply.reason === "overloaded") this.counts.refusedOverloaded++;
    else this.counts.fenced++;
  }

  private finishLeavingWhenIdle(): void {
    if (this.stateValue !== "stopping" || this.pendingTotal > 0 || this.leaseDeleteStarted) return;
    this.leaseDeleteStarted = true;
    if (this.heartbeat !== undefined) this.heartbeat.cancelled = true;
    // LeaseHolder.stop(): a plain delete; a failure is only logged (watchers expire the lease then).
    const stopWatcher = (): void => {
      this.watcher?.stop();
      this.note("left");
      this.kill();
      this.stateValue = "left";
    };
    this.requestBucket(
      (bucket) => bucket.delete(this.leaseKey()),
      stopWatcher,
      (why) => {
        this.note(`could not delete its lease: ${why}`);
        stopWatcher();
      },
    );
  }

  private failStart(why: string): void {
    if (this.stateValue !== "starting" && this.stateValue !== "serving") return;
    this.note(`failed to start: ${why}`);
    this.becomeDown();
    this.hooks.down(this);
  }

  private becomeDown(): void {
    this.watcher?.stop();
    this.watcher = undefined;
    this.kill();
    this.stateValue = "down";
    this.queues.clear();
    this.pendingTotal = 0;
    this.leaseTerm = undefined;
    this.heartbeat = undefined;
  }

  private leaseKey(): string {
    return `worker.${this.id}`;
  }

  private leaseValue(): Uint8Array {
    const { cellId, leaseMs } = this.world.settings;
    return encodeJson({
      workerId: this.id,
      cellId,
      subject: `sim.cell.${cellId}.worker.${this.id}`,
      startedAtMs: this.leaseStartedAtMs,
      leaseMs,
    });
  }

  private note(text: string): void {
    this.world.trace.record(this.world.queue.nowMs, `${this.id}: ${text}`);
  }
}

function toReply(result: DatabaseWriteResult): WriteReply {
  return result.outcome === "stored"
    ? { kind: "stored", seq: result.seq, deduplicated: result.deduplicated }
    : { kind: "refused", reason: "fenced" };
}
