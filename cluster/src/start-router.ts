// The one way to build a Router over NATS (issue 12 item 1): startRouter makes the ring-level step
// (CellRouter: the owner on a cell's ring, not_owner and owner-left retries, the send batcher) inside and
// returns the Router, with what a process needs of the ring step besides routing: ring changes (an edge
// catches its sessions up), whether a cell has live workers (the CLI's drain), and stop. CellRouter itself
// is not exported, so no caller can route around the Router.
import type { NatsConnection } from "@nats-io/transport-node";
import type { DirectoryEntry, DirectoryEntryKind } from "@cellwire/protocol";
import { CellRouter, type CellRouterOptions } from "./cell-router.ts";
import type { Logger } from "./log-lines.ts";
import type { Clock } from "./membership.ts";
import { Router, routerDefaults, type HomeDirectory, type HomeKey, type HomeLocation, type RouterOptions } from "./router.ts";
import { sleep as sleepRealTime } from "./sleep.ts";

/** The ring step's settings: per-attempt timeout, attempts, deadline, backoff and watched cells. */
export type RingRoutingOptions = CellRouterOptions;

export type StartRouterOptions = {
  readonly ring: RingRoutingOptions;
  /** Where keys live, for toHome. */
  readonly homes: HomeDirectory;
  /** How toHome follows moves; routerDefaults when not given. */
  readonly moves?: RouterOptions;
};

export type StartRouterDependencies = {
  readonly clock: Clock;
  readonly logger: Logger;
  readonly random?: () => number;
  readonly sleep?: (ms: number) => Promise<void>;
};

/** A Router whose ring step watches the cells' membership buckets: stop it with the process. */
export class RunningRouter extends Router {
  /** @internal Built by startRouter only. */
  constructor(
    private readonly ring: CellRouter,
    homes: HomeDirectory,
    moves: RouterOptions,
    dependencies: { readonly clock: Clock; readonly random: () => number; readonly sleep: (ms: number) => Promise<void> },
  ) {
    super(homes, ring, moves, {
      monotonicNowMs: () => dependencies.clock.monotonicNowMs(),
      random: dependencies.random,
      sleep: dependencies.sleep,
    });
  }

  /** Waits until the cell's membership has been read; true when it has at least one live worker. */
  hasLiveWorkers(cellId: string): Promise<boolean> {
    return this.ring.hasLiveWorkers(cellId);
  }

  /** Called whenever the live workers of a watched cell change (a worker joined, left or expired). */
  onRingChange(listener: (cellId: string) => void): () => void {
    return this.ring.onRingChange(listener);
  }

  /** Stops the membership watches of the cells routed to so far (with the process). */
  stop(): void {
    this.ring.stop();
  }
}

export function startRouter(connection: NatsConnection, options: StartRouterOptions, dependencies: StartRouterDependencies): RunningRouter {
  const random = dependencies.random ?? Math.random;
  const sleep = dependencies.sleep ?? sleepRealTime;
  const ring = new CellRouter(connection, options.ring, dependencies.clock, dependencies.logger, random, sleep);
  return new RunningRouter(ring, options.homes, options.moves ?? routerDefaults, { clock: dependencies.clock, random, sleep });
}

/** What directoryHomes needs of DirectoryClient. */
export type DirectoryLookup = { lookup(kind: DirectoryEntryKind, id: string): Promise<DirectoryEntry | undefined> };

/**
 * Homes asked of the directory at every resolve, with no cache: for callers that route mostly with toCell
 * (the CLI, a worker's migration) and so keep no home cache of their own. A move is followed within the
 * call by the Router; nothing is kept after it.
 */
export function directoryHomes(directory: DirectoryLookup): HomeDirectory {
  return {
    resolve: async (key: HomeKey): Promise<HomeLocation | undefined> => {
      const entry = await directory.lookup(key.kind, key.id);
      return entry === undefined ? undefined : { cellId: entry.cellId, epoch: entry.epoch };
    },
    moved: () => {},
    forget: () => {},
  };
}
