// A topology for integration tests: a unique namespace, free ports, short leases, output kept in memory
// (printed when a test fails), and cleanup of every database, bucket and key it made.
import { randomBytes } from "node:crypto";
import { connect } from "@nats-io/transport-node";
import { DirectoryClient } from "@cellwire/cluster";
import { destroyNamespace } from "./cleanup.ts";
import { serveTopologyControl } from "./topology-control.ts";
import { startTopology, type CellPlan, type Topology } from "./topology.ts";

export type TestTopology = {
  readonly namespace: string;
  readonly topology: Topology;
  readonly output: string[];
  /** Stops the processes, keeping databases and keys (for restart tests). */
  stopProcesses(): Promise<void>;
  /** Starts the same topology again on the same namespace. */
  restart(): Promise<Topology>;
  /**
   * Stops the processes and removes everything the namespace created. `natsServers` replaces the
   * topology's servers for the cleanup (the nodes of a NATS cluster still alive after a chaos test).
   */
  destroy(natsServers?: readonly string[]): Promise<void>;
};

export const testServices = {
  natsServers: ["127.0.0.1:4222"],
  redisUrl: "redis://127.0.0.1:6379",
  postgresAdminUrl: "postgres://postgres@127.0.0.1:5432/postgres",
} as const;

export function uniqueNamespace(label: string): string {
  return `t${label}${Date.now().toString(36)}${randomBytes(3).toString("hex")}`.slice(0, 24);
}

export type TestTopologyOptions = {
  readonly label: string;
  readonly cells?: readonly CellPlan[];
  readonly edgeCount?: number;
  readonly webDirectory?: string;
  readonly extraEnvironment?: Readonly<Record<string, string>>;
  /** The NATS servers every process connects to (default: the machine's, testServices.natsServers). */
  readonly natsServers?: readonly string[];
  /** The Redis the directory uses and the cleanup empties (default: the machine's, testServices.redisUrl). */
  readonly redisUrl?: string;
};

export async function startTestTopology(options: TestTopologyOptions): Promise<TestTopology> {
  const namespace = uniqueNamespace(options.label);
  const cells = options.cells ?? [
    { cellId: "a", workerCount: 2 },
    { cellId: "b", workerCount: 2 },
  ];
  const services = {
    ...testServices,
    natsServers: options.natsServers ?? testServices.natsServers,
    redisUrl: options.redisUrl ?? testServices.redisUrl,
  };
  const output: string[] = [];
  const outputLinesMax = 5000;
  const start = (): Promise<Topology> =>
    startTopology({
      namespace,
      ...services,
      cells,
      edgePorts: Array.from({ length: options.edgeCount ?? 2 }, () => 0),
      edgeHost: "127.0.0.1",
      ...(options.webDirectory === undefined ? {} : { webDirectory: options.webDirectory }),
      // A short edge drain: a test that stops its topology with clients still connected should not wait
      // the production window (5 s) for them; the edge drain test sets its own.
      extraEnvironment: {
        WORKER_LEASE_MS: "2000",
        WORKER_HEARTBEAT_INTERVAL_MS: "500",
        EDGE_LEASE_MS: "2000",
        EDGE_DRAIN_MS: "500",
        EDGE_DRAIN_GRACE_MS: "1000",
        ...options.extraEnvironment,
      },
      onOutput: (processName, line) => {
        output.push(`[${processName}] ${line}`);
        if (output.length > outputLinesMax) output.shift();
      },
      startDeadlineMs: 90_000,
    });
  let topology: Topology;
  try {
    topology = await start();
  } catch (error) {
    await destroyNamespace({ namespace, cellIds: cells.map((cell) => cell.cellId), ...services }).catch(() => undefined);
    throw new Error(`${String(error)}\n${output.slice(-60).join("\n")}`);
  }
  // Like the launcher of `npm start`, the test topology starts cells that `cellwire add-cell` asks for.
  const control = await connect({ servers: [...services.natsServers], name: `cellwire-test-launcher-${namespace}` });
  serveTopologyControl(control, namespace, () => topology);
  const handle: TestTopology = {
    namespace,
    get topology() {
      return topology;
    },
    output,
    stopProcesses: () => topology.stop(),
    restart: async () => {
      topology = await start();
      return topology;
    },
    destroy: async (natsServers = services.natsServers) => {
      await control.close().catch(() => undefined);
      await topology.stop();
      await destroyNamespace({ namespace, cellIds: topology.cellIds, ...services, natsServers });
    },
  };
  return handle;
}

/** Places users on chosen cells through the directory, so a test knows which cell each user lives in. */
export async function placeUsers(test: TestTopology, placements: readonly (readonly [userId: string, cellId: string])[]): Promise<void> {
  const connection = await connect({ servers: [...testServices.natsServers] });
  try {
    const directory = new DirectoryClient(connection, test.namespace, 5000);
    for (const [userId, cellId] of placements) {
      const { entry } = await directory.assignUser(userId, cellId);
      if (entry.cellId !== cellId) throw new Error(`${userId} already lives in cell ${entry.cellId}, not ${cellId}`);
    }
  } finally {
    await connection.close();
  }
}
