// Leases, watchers and ring epochs against the machine's real NATS JetStream KV, in a bucket of a unique
// namespace: renewals leave the epoch alone, joins move it, and a lease that stops renewing is deleted by
// a watcher (compare-and-set) with a revision of its own, which becomes everyone's new epoch.
import { randomBytes } from "node:crypto";
import type { KV, KvWatchEntry, KvWatchOptions } from "@nats-io/kv";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { leaseKey, workerSubject, type WorkerLease } from "@cellwire/protocol";
import { LeaseHolder } from "./lease-holder.ts";
import { MembershipWatcher, destroyMembershipBucket, openMembershipBucket, systemClock, type WatchedBucket } from "./membership.ts";
import { encodeJson } from "./nats-json.ts";
import { connectNats } from "./service-runtime.ts";
import type { ServiceLogger } from "./service-logger.ts";
import { anonymousNatsAccess } from "./nats-access.ts";
import { pollUntil, silentServiceLogger } from "@cellwire/testkit";

const namespace = `t${Date.now().toString(36)}${randomBytes(3).toString("hex")}`;
const cellId = "a";
/** The cell of the stall test, in a bucket of its own so that the leases above do not mix in. */
const stallCellId = "s";
/** The cell of the test of a watch that misses one key while it delivers the others. */
const behindCellId = "h";
const leaseMs = 600;
const heartbeatIntervalMs = 100;
/** A heartbeat that never comes within the test: the holder writes its lease once and then goes quiet. */
const silentHeartbeatIntervalMs = 3_600_000;
const deadlineMs = 10_000;
const logger: ServiceLogger = silentServiceLogger;

type Connection = Awaited<ReturnType<typeof connectNats>>;
let connection: Connection | undefined;
let bucket: KV | undefined;
let stallBucket: KV | undefined;
const watchers: MembershipWatcher[] = [];
const holders: LeaseHolder[] = [];

function required<T>(value: T | undefined, what: string): T {
  if (value === undefined) throw new Error(`${what} is not ready`);
  return value;
}

function waitFor<T>(what: string, probe: () => Promise<T | undefined> | T | undefined): Promise<T> {
  return pollUntil(what, probe, { deadlineMs });
}

async function startWatcher(): Promise<MembershipWatcher> {
  const watcher = new MembershipWatcher(required(bucket, "bucket"), cellId, 50, systemClock, logger);
  watchers.push(watcher);
  await watcher.start();
  await watcher.ready;
  return watcher;
}

async function holdLease(workerId: string, intervalMs: number): Promise<LeaseHolder> {
  const lease: WorkerLease = { workerId, cellId, subject: workerSubject(namespace, cellId, workerId), startedAtMs: Date.now(), leaseMs };
  const holder = new LeaseHolder(required(bucket, "bucket"), lease, intervalMs, systemClock, logger);
  holders.push(holder);
  await holder.start();
  return holder;
}

function members(watcher: MembershipWatcher): string {
  return [...watcher.snapshot.ring.members].join(",");
}

/** Waits until every watcher shows exactly `expected` members, and returns their common epoch. */
async function agreedEpoch(group: readonly MembershipWatcher[], expected: string): Promise<number> {
  return waitFor(`rings of ${expected}`, () => {
    const epochs = new Set(group.map((watcher) => watcher.snapshot.ringEpoch));
    return group.every((watcher) => members(watcher) === expected) && epochs.size === 1 ? [...epochs][0] : undefined;
  });
}

async function revisionOf(workerId: string): Promise<{ revision: number; operation: string }> {
  const entry = await required(bucket, "bucket").get(leaseKey(workerId));
  if (entry === null) throw new Error(`no entry for ${workerId}`);
  return { revision: entry.revision, operation: entry.operation };
}

beforeAll(async () => {
  connection = await connectNats(["127.0.0.1:4222"], "cluster-membership-test", logger, anonymousNatsAccess("worker"));
  bucket = await openMembershipBucket(connection, namespace, cellId, leaseMs);
});

afterAll(async () => {
  for (const holder of holders) await holder.stop();
  for (const watcher of watchers) watcher.stop();
  if (connection !== undefined) {
    await destroyMembershipBucket(connection, namespace, cellId).catch(() => undefined);
    await destroyMembershipBucket(connection, namespace, stallCellId).catch(() => undefined);
    await destroyMembershipBucket(connection, namespace, behindCellId).catch(() => undefined);
    await connection.drain();
  }
});

describe("membership epochs over NATS KV", () => {
  let firstEpoch = 0;
  let joinEpoch = 0;

  it("takes the join's revision as the epoch, keeps it across renewals, and moves it on the next join", async () => {
    const group = [await startWatcher(), await startWatcher()];
    expect(group[0]?.snapshot.ringEpoch).toBe(0);
    await holdLease("a-1", heartbeatIntervalMs);
    firstEpoch = await agreedEpoch(group, "a-1");
    expect(firstEpoch).toBeGreaterThan(0);
    // Several renewals later the revision of the lease has moved on, the epoch has not.
    await waitFor("three renewals", async () => ((await revisionOf("a-1")).revision >= firstEpoch + 3 ? true : undefined));
    expect(group.map((watcher) => watcher.snapshot.ringEpoch)).toEqual([firstEpoch, firstEpoch]);

    await holdLease("a-2", silentHeartbeatIntervalMs);
    joinEpoch = await agreedEpoch(group, "a-1,a-2");
    expect(joinEpoch).toBeGreaterThan(firstEpoch);
    // a-2 wrote its lease once: the epoch is the revision of that put.
    expect(await revisionOf("a-2")).toEqual({ revision: joinEpoch, operation: "PUT" });
  });

  it("deletes a lease that stopped renewing, with a revision of its own that becomes every watcher's epoch", async () => {
    const group = watchers.slice(0, 2);
    const removalEpoch = await agreedEpoch(group, "a-1");
    expect(removalEpoch).toBeGreaterThan(joinEpoch);
    // The removal is in the bucket, as a delete marker at exactly that revision.
    expect(await revisionOf("a-2")).toEqual({ revision: removalEpoch, operation: "DEL" });
    // a-1 kept renewing throughout and stays.
    expect((await revisionOf("a-1")).operation).toBe("PUT");
  });

  it("gives a watcher that starts later the same ring and an epoch no lower", async () => {
    const [first] = watchers;
    const latecomer = await startWatcher();
    expect(members(latecomer)).toBe("a-1");
    expect(latecomer.snapshot.ringEpoch).toBeGreaterThanOrEqual(required(first, "watcher").snapshot.ringEpoch);
  });

  it("refuses a delete at a stale revision, so a renewed lease survives a late watcher", async () => {
    await expect(required(bucket, "bucket").delete(leaseKey("a-1"), { previousSeq: firstEpoch })).rejects.toThrow();
    expect((await revisionOf("a-1")).operation).toBe("PUT");
    // A renewal seen after the refused delete proves the ring did not lose a-1 meanwhile.
    const seen = (await revisionOf("a-1")).revision;
    await waitFor("a later renewal", async () => ((await revisionOf("a-1")).revision > seen ? true : undefined));
    expect(watchers.every((watcher) => members(watcher) === "a-1")).toBe(true);
  });

  it("moves the epoch again when the silent worker comes back", async () => {
    const group = watchers.slice(0, 2);
    const before = required(group[0], "watcher").snapshot.ringEpoch;
    await holdLease("a-2", heartbeatIntervalMs);
    const rejoined = await agreedEpoch(group, "a-1,a-2");
    expect(rejoined).toBeGreaterThan(before);
  });
});

type WatchIterator = Awaited<ReturnType<KV["watch"]>>;

/**
 * A watch that goes silent on `freeze()`, as one whose consumer lived on a NATS node that died: entries
 * arriving afterwards are swallowed until the watcher stops it. Records the last revision it handed over.
 */
class FreezableWatch implements WatchIterator {
  lastDeliveredRevision = 0;
  private frozen = false;
  private readonly hiddenKeys = new Set<string>();

  constructor(private readonly inner: WatchIterator) {}

  freeze(): void {
    this.frozen = true;
  }

  /** Swallows the entries of `key` from now on and hands over the others: a watch that is lively, and behind. */
  hide(key: string): void {
    this.hiddenKeys.add(key);
  }

  async *[Symbol.asyncIterator](): AsyncGenerator<KvWatchEntry> {
    for await (const entry of this.inner) {
      if (this.frozen || this.hiddenKeys.has(entry.key)) continue;
      this.lastDeliveredRevision = entry.revision;
      yield entry;
    }
  }

  stop(error?: Error): void {
    this.inner.stop(error);
  }

  getProcessed(): number {
    return this.inner.getProcessed();
  }

  getPending(): number {
    return this.inner.getPending();
  }

  getReceived(): number {
    return this.inner.getReceived();
  }
}

/**
 * A watcher of `cellId` that sees the real bucket through a seam (each watch a FreezableWatch, the first
 * kept in `seen`; watch options and status calls recorded; its warnings kept), with the given stall check
 * interval, and a reference watcher of the same bucket; both started and ready.
 */
async function seamAndReference(real: KV, cellId: string, stallCheckIntervalMs: number) {
  const watchCalls: KvWatchOptions[] = [];
  const warnings: string[] = [];
  const seen: { statusCalls: number; firstWatch: FreezableWatch | undefined } = { statusCalls: 0, firstWatch: undefined };
  const seam: WatchedBucket = {
    status: () => {
      seen.statusCalls += 1;
      return real.status();
    },
    get: (key, options) => real.get(key, options),
    delete: (key, options) => real.delete(key, options),
    watch: async (options) => {
      watchCalls.push(options ?? {});
      const watch = new FreezableWatch(await real.watch(options));
      seen.firstWatch ??= watch;
      return watch;
    },
  };
  const logger = { info: () => undefined, warn: (message: string) => void warnings.push(message) };
  const watcher = new MembershipWatcher(seam, cellId, 50, systemClock, logger, 2000, stallCheckIntervalMs);
  const reference = new MembershipWatcher(real, cellId, 50, systemClock, silentServiceLogger);
  for (const started of [watcher, reference]) {
    watchers.push(started);
    await started.start();
    await started.ready;
  }
  const lease = (workerId: string): WorkerLease => ({
    workerId,
    cellId,
    subject: workerSubject(namespace, cellId, workerId),
    startedAtMs: Date.now(),
    leaseMs,
  });
  return { watcher, reference, watchCalls, warnings, seen, lease };
}

describe("a membership watch that stalls", () => {
  it("is replaced by a watch from the last applied revision + 1 that applies the missed join once, at an epoch no lower than the join's", async () => {
    const real = await openMembershipBucket(required(connection, "nats"), namespace, stallCellId, leaseMs);
    stallBucket = real;
    const stallCheckIntervalMs = 200;
    const {
      watcher: stalled,
      reference,
      watchCalls,
      warnings,
      seen,
      lease,
    } = await seamAndReference(real, stallCellId, stallCheckIntervalMs);
    const first = new LeaseHolder(real, lease("s-1"), heartbeatIntervalMs, systemClock, logger);
    holders.push(first);
    await first.start();
    const firstEpoch = await agreedEpoch([stalled, reference], "s-1");
    // A healthy watch of a live cell is never taken for a stalled one.
    await waitFor("renewals over a lease", async () =>
      ((await real.get(leaseKey("s-1")))?.revision ?? 0) >= firstEpoch + leaseMs / heartbeatIntervalMs + 2 ? true : undefined,
    );
    expect(watchCalls).toHaveLength(1);
    // Nor does it cost a JetStream API call per check: the bucket is asked only at start, while entries
    // keep coming within the quiet limit (several stall checks ran meanwhile).
    expect(seen.statusCalls).toBe(1);

    const changesAfterStall: Array<{ members: string; epoch: number }> = [];
    stalled.onChange((snapshot) => changesAfterStall.push({ members: [...snapshot.ring.members].join(","), epoch: snapshot.ringEpoch }));
    const watch = required(seen.firstWatch, "first watch");
    watch.freeze();
    const frozenAtRevision = watch.lastDeliveredRevision;
    const frozenAtMs = performance.now();
    // s-2 joins with a put of its own, whose revision is the join's epoch; its holder renews from then on.
    const joinRevision = await real.put(leaseKey("s-2"), encodeJson(lease("s-2")));
    const second = new LeaseHolder(real, lease("s-2"), heartbeatIntervalMs, systemClock, logger);
    holders.push(second);
    await second.start();
    const joinEpoch = await agreedEpoch([reference], "s-1,s-2");
    expect(joinEpoch).toBe(joinRevision);
    expect(members(stalled)).toBe("s-1");

    const caughtUp = await waitFor("the stalled watcher's ring of s-1,s-2", () =>
      members(stalled) === "s-1,s-2" ? stalled.snapshot : undefined,
    );
    const caughtUpAfterMs = performance.now() - frozenAtMs;
    const bucketRevisionWhenCaughtUp = (await real.status()).streamInfo.state.last_seq;
    // Quiet for a lease, then noticed by the next check; the rest is slack for a loaded machine.
    expect(caughtUpAfterMs).toBeLessThan(leaseMs + stallCheckIntervalMs + 2000);
    expect(watchCalls).toHaveLength(2);
    expect(watchCalls[1]).toEqual({ key: "worker.>", resumeFromRevision: frozenAtRevision + 1 });
    expect(warnings.filter((warning) => warning.includes("watching again from revision"))).toHaveLength(1);
    // The bucket kept only the latest renewal of each lease, not the join: the catch-up names the ring by
    // the last revision it read, as a watcher starting then would, never lower than the join's epoch.
    expect(caughtUp.ringEpoch).toBeGreaterThan(joinEpoch);
    expect(caughtUp.ringEpoch).toBeLessThanOrEqual(bucketRevisionWhenCaughtUp);
    // Applied once: one published change, to the ring of that epoch, and none in the renewals since.
    await waitFor("more renewals", async () =>
      ((await real.get(leaseKey("s-2")))?.revision ?? 0) >= bucketRevisionWhenCaughtUp + 5 ? true : undefined,
    );
    expect(changesAfterStall).toEqual([{ members: "s-1,s-2", epoch: caughtUp.ringEpoch }]);
    expect(stalled.snapshot.ringEpoch).toBe(caughtUp.ringEpoch);
    expect(members(reference)).toBe("s-1,s-2");
    expect(watchCalls).toHaveLength(2);
  });
});

describe("a membership watch that is behind while it delivers", () => {
  it("is not taken for a stalled one, and is replaced at once when its process learns it is behind", async () => {
    const real = await openMembershipBucket(required(connection, "nats"), namespace, behindCellId, leaseMs);
    const stallCheckIntervalMs = 200;
    const {
      watcher: behind,
      reference,
      watchCalls,
      warnings,
      seen,
      lease,
    } = await seamAndReference(real, behindCellId, stallCheckIntervalMs);
    const renewals = async (workerId: string, count: number): Promise<void> => {
      const from = (await real.get(leaseKey(workerId)))?.revision ?? 0;
      // Every renewal of the cell takes a revision, so this waits for at least `count` of this holder's.
      await waitFor(`${count} renewals of ${workerId}`, async () =>
        ((await real.get(leaseKey(workerId)))?.revision ?? 0) >= from + 2 * count ? true : undefined,
      );
    };
    const first = new LeaseHolder(real, lease("h-1"), heartbeatIntervalMs, systemClock, logger);
    holders.push(first);
    await first.start();
    await agreedEpoch([behind, reference], "h-1");

    // The watch misses h-2's join and every renewal of it (as one whose consumer a NATS restart left
    // behind), while h-1's renewals keep it lively.
    required(seen.firstWatch, "first watch").hide(leaseKey("h-2"));
    const second = new LeaseHolder(real, lease("h-2"), heartbeatIntervalMs, systemClock, logger);
    holders.push(second);
    await second.start();
    await agreedEpoch([reference], "h-1,h-2");
    // More than a lease and several stall checks later: a watch that delivers within the quiet limit is
    // never asked about, so nothing but its process can tell that it is behind.
    await renewals("h-1", leaseMs / heartbeatIntervalMs + 4);
    expect(members(behind)).toBe("h-1");
    expect(watchCalls).toHaveLength(1);

    // Its worker's write is fenced: the watcher watches again from its last applied revision + 1, at once.
    behind.suspectStale("a write was fenced");
    const caughtUp = await waitFor("the ring of h-1,h-2", () => (members(behind) === "h-1,h-2" ? behind.snapshot : undefined));
    // A catch-up names the ring by the last revision it read: never lower than the join's epoch.
    expect(caughtUp.ringEpoch).toBeGreaterThanOrEqual(reference.snapshot.ringEpoch);
    expect(watchCalls).toHaveLength(2);
    expect(watchCalls[1]?.resumeFromRevision).toBeGreaterThan(1);
    expect(warnings).toEqual([expect.stringContaining("is behind the cell: a write was fenced; watching again from revision")]);

    // Suspicions in a burst (every fenced write of a batch) cost one more watch per stall check interval, not one each.
    behind.suspectStale("a write was fenced");
    behind.suspectStale("a write was fenced");
    behind.suspectStale("a write was fenced");
    await waitFor("a third watch", () => (watchCalls.length >= 3 ? true : undefined));
    await renewals("h-1", 5);
    expect(watchCalls).toHaveLength(3);
    expect(members(behind)).toBe("h-1,h-2");
  });
});
