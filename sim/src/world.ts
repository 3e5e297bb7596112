// What every part of a simulated run shares: the virtual clock, the seeded randomness, the bucket, the
// database, the network, the checker, the trace and the settings.
import type { BackoffPolicy } from "@cellwire/cluster";
import type { EventQueue } from "./event-queue.ts";
import type { SafetyChecker } from "./safety-checker.ts";
import type { SeededRandom } from "./seeded-random.ts";
import type { SimulatedBucket } from "./simulated-bucket.ts";
import type { SimulatedDatabase } from "./simulated-database.ts";
import type { NetworkSettings, SimulatedNetwork } from "./simulated-network.ts";
import type { Trace } from "./trace.ts";

/** Faults drawn at each tick of the fault phase (probabilities per tick unless named otherwise). */
export type FaultSettings = {
  readonly pauseProbability: number;
  readonly pauseMsMax: number;
  readonly crashProbability: number;
  /** A crashed worker restarts after up to this long (while faults are on; at once when they stop). */
  readonly downMsMax: number;
  readonly partitionProbability: number;
  readonly partitionMsMax: number;
  readonly joinProbability: number;
  readonly leaveProbability: number;
  /** Per write, when it passed its checks: the worker pauses before its statement reaches the database. */
  readonly storeCallPauseProbability: number;
};

export type SimulationSettings = {
  readonly cellId: string;
  readonly leaseMs: number;
  readonly heartbeatIntervalMs: number;
  /** As the worker and the router set it: leaseExpiryCheckIntervalMs (@cellwire/cluster). */
  readonly expiryCheckIntervalMs: number;
  /** MembershipWatcher's default readyDeadlineMs. */
  readonly readyDeadlineMs: number;
  /** The bucket's max_age: ten leases, as openMembershipBucket creates it. */
  readonly bucketMaxAgeMs: number;
  readonly bucketRequestTimeoutMs: number;
  /** Between a write's checks and its statement leaving the worker (a pool checkout). */
  readonly storeCallDelayMs: number;
  readonly clientRequestTimeoutMs: number;
  readonly retryBackoff: BackoffPolicy;
  /** Attempts of one client write in the fault phase (the router's attemptsMax). */
  readonly writeAttemptsMax: number;
  readonly writeThinkMsMax: number;
  /** A client request goes to a random member instead of the owner (a router behind on the ring). */
  readonly misrouteProbability: number;
  readonly keyCount: number;
  readonly writerCount: number;
  readonly pendingPerKeyMax: number;
  readonly pendingTotalMax: number;
  readonly workersInitial: number;
  readonly workersMax: number;
  /** Leaves never bring the workers that are not leaving or gone below this. */
  readonly workersStayingMin: number;
  readonly wallClockSkewMsMax: number;
  readonly tickMs: number;
  readonly faults: FaultSettings;
  readonly network: NetworkSettings;
  /** After healing: every live process agrees on one ring of exactly the live workers within this. */
  readonly convergenceDeadlineMs: number;
  /** Then: a write to every key is acknowledged within this. */
  readonly livenessWriteDeadlineMs: number;
  readonly pausedBacklogMax: number;
  /** Events one run may execute: a run past it is reported as stuck (a livelock). */
  readonly eventsMax: number;
};

export type World = {
  readonly queue: EventQueue;
  readonly random: SeededRandom;
  readonly bucket: SimulatedBucket;
  readonly database: SimulatedDatabase;
  readonly network: SimulatedNetwork;
  readonly checker: SafetyChecker;
  readonly trace: Trace;
  readonly settings: SimulationSettings;
  /** Whether writes re-check lease and ownership when their turn comes (false plants a bug). */
  readonly ownershipRecheckEnabled: boolean;
};
