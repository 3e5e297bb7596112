// The systems the chat benchmark drives, started fresh for one run and stopped with everything they made:
// Cellwire as `npm start` runs it (directory, cells a and b with two workers each, two edges; default lease
// settings) on a namespace of its own, and the two-node Socket.IO peer under an adapter key of its own.
// Each names the processes that work for it, so the coordinator can measure their CPU and memory.
import { join } from "node:path";
import pg from "pg";
import { defaultDevKeyDirectory, ensureDevKeyPair } from "@cellwire/edge/dev-keys";
import { cellDatabaseName } from "@cellwire/protocol";
import { destroyNamespace } from "../../cleanup.ts";
import { startTopology, type CellPlan, type Topology } from "../../topology.ts";
import { startSocketIoPeer, type SocketIoPeer } from "./socketio-peer/peer-cluster.ts";
import type { SystemName } from "./load-messages.ts";
import { findProcessIdsByName, type UsageTarget } from "./process-usage.ts";

export type SharedServices = {
  readonly natsServers: readonly string[];
  readonly redisUrl: string;
  readonly postgresAdminUrl: string;
};

/** Lines of the servers' output kept for the message of a failure. */
const recentOutputLinesMax = 200;
/** How long each server process may take to say it is ready (Postgres migrations included). */
const startDeadlineMs = 90_000;

export type RunningSystem = {
  readonly system: SystemName;
  /** The URL of each edge or node, in the order the workload assigns users to them. */
  readonly serverUrls: readonly string[];
  /** The system's own processes and the shared services it uses, each a measured group. */
  readonly usageTargets: readonly UsageTarget[];
  /** What the servers printed last, oldest first. */
  recentOutput(): string[];
  /** Stops every process and removes what the run made on the shared services. Safe to call twice. */
  stop(): Promise<void>;
};

export type CellwireSystem = RunningSystem & {
  readonly system: "cellwire";
  /** The processes themselves: the connections bench kills an edge and reads their output. */
  readonly topology: Topology;
  readonly namespace: string;
  readonly cellIds: readonly string[];
  readonly postgresAdminUrl: string;
};

class RecentLines {
  private readonly lines: string[] = [];

  add(line: string): void {
    this.lines.push(line);
    if (this.lines.length > recentOutputLinesMax) this.lines.shift();
  }

  all(): string[] {
    return [...this.lines];
  }
}

function namedProcessTarget(name: string): UsageTarget {
  return { name, pids: () => findProcessIdsByName(name) };
}

const cells: readonly CellPlan[] = [
  { cellId: "a", workerCount: 2 },
  { cellId: "b", workerCount: 2 },
];

export type CellwireStartOptions = SharedServices & {
  readonly namespace: string;
  /** CPU profiles of every process go to <directory>/<processName>/ when set. */
  readonly profileDirectory: string | undefined;
  /** Called with a line when a server exits without being asked to: the run is broken from then on. */
  readonly onUnexpectedExit: (message: string) => void;
  /** Extra environment for every process (the connections bench raises the edges' hello deadline). */
  readonly extraEnvironment?: Readonly<Record<string, string>>;
  /** Node options for a process, after the profile's (the connections bench opens the edges' inspector). */
  readonly extraExecArgv?: (processName: string) => readonly string[];
  /** Receives every line a server prints, besides the recent lines kept for failures. */
  readonly onOutput?: (processName: string, line: string) => void;
};

export async function startCellwire(options: CellwireStartOptions): Promise<CellwireSystem> {
  const cellIds = cells.map((cell) => cell.cellId);
  const resources = {
    namespace: options.namespace,
    cellIds,
    natsServers: options.natsServers,
    redisUrl: options.redisUrl,
    postgresAdminUrl: options.postgresAdminUrl,
  };
  // Edges and load processes would otherwise race to create the dev key pair on a fresh clone.
  await ensureDevKeyPair(defaultDevKeyDirectory);
  const output = new RecentLines();
  let stopping = false;
  let topology: Topology;
  try {
    topology = await startTopology({
      namespace: options.namespace,
      natsServers: options.natsServers,
      redisUrl: options.redisUrl,
      postgresAdminUrl: options.postgresAdminUrl,
      cells,
      edgePorts: [0, 0],
      edgeHost: "127.0.0.1",
      ...(options.extraEnvironment === undefined ? {} : { extraEnvironment: options.extraEnvironment }),
      extraExecArgv: (processName) => [
        ...(options.profileDirectory === undefined ? [] : ["--cpu-prof", `--cpu-prof-dir=${join(options.profileDirectory, processName)}`]),
        ...(options.extraExecArgv?.(processName) ?? []),
      ],
      onOutput: (processName, line) => {
        output.add(`[${processName}] ${line}`);
        options.onOutput?.(processName, line);
      },
      onUnexpectedExit: (processName, code) => {
        if (!stopping) options.onUnexpectedExit(`${processName} exited unexpectedly (status ${String(code)})`);
      },
      startDeadlineMs,
    });
  } catch (error) {
    await destroyNamespace(resources).catch(() => undefined);
    throw new Error(
      `Cellwire did not start: ${error instanceof Error ? error.message : String(error)}\n${output.all().slice(-40).join("\n")}`,
      { cause: error },
    );
  }
  const admin = new pg.Client({ connectionString: options.postgresAdminUrl });
  // An idle client whose server goes away emits 'error'; without a listener that would crash the run.
  admin.on("error", () => undefined);
  let stopped: Promise<void> | undefined;
  const stop = (): Promise<void> =>
    (stopped ??= (async () => {
      stopping = true;
      await admin.end().catch(() => undefined);
      await topology.stop();
      await destroyNamespace(resources);
    })());
  try {
    await admin.connect();
  } catch (error) {
    await stop().catch(() => undefined);
    throw error;
  }
  const databaseNames = cellIds.map((cellId) => cellDatabaseName(options.namespace, cellId));
  const postgresBackends: UsageTarget = {
    name: "postgres",
    // The backends serving this run's cell databases (not the admin connection asking, nor other runs).
    pids: async () => {
      const result = await admin.query("select pid from pg_stat_activity where datname = any($1::text[])", [databaseNames]);
      return (result.rows as unknown[]).flatMap((row) =>
        typeof row === "object" && row !== null && "pid" in row && typeof row.pid === "number" ? [row.pid] : [],
      );
    },
  };
  const serverTargets: UsageTarget[] = topology.processes().map(({ processName }) => ({
    name: processName,
    // Asked each time: a respawned process has a new pid.
    pids: () => topology.processes().flatMap((running) => (running.processName === processName ? [running.pid] : [])),
  }));
  return {
    system: "cellwire",
    serverUrls: topology.edges.map((edge) => edge.webSocketUrl),
    usageTargets: [...serverTargets, postgresBackends, namedProcessTarget("nats-server"), namedProcessTarget("redis-server")],
    recentOutput: () => output.all(),
    stop,
    topology,
    namespace: options.namespace,
    cellIds,
    postgresAdminUrl: options.postgresAdminUrl,
  };
}

export type PeerSystem = RunningSystem & { readonly system: "socketio" };

export type PeerStartOptions = {
  readonly redisUrl: string;
  /** The redis adapter's key prefix: unique per run. */
  readonly key: string;
};

export async function startSocketIo(options: PeerStartOptions): Promise<PeerSystem> {
  const output = new RecentLines();
  const peer: SocketIoPeer = await startSocketIoPeer({
    nodes: 2,
    redisUrl: options.redisUrl,
    key: options.key,
    onOutput: (processName, line) => output.add(`[${processName}] ${line}`),
  });
  return {
    system: "socketio",
    serverUrls: peer.urls,
    usageTargets: [
      ...peer.processes.map(({ processName, pid }) => ({ name: processName, pids: () => [pid] })),
      namedProcessTarget("redis-server"),
    ],
    recentOutput: () => output.all(),
    stop: () => peer.stop(),
  };
}
