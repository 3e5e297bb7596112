// A topology for integration tests: a unique namespace, free ports, short leases, output kept in memory
// (printed when a test fails), and cleanup of every database, bucket and key it made. Unless a test names
// its NATS servers, the topology runs on a private nats-server of its own, started from the shipped
// configuration, each process connecting as its service's user (docs/decisions/0015).
import { randomBytes } from "node:crypto";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { anonymousNatsAccess, DirectoryClient, natsConnectOptions, type NatsAccess, type NatsService } from "@cellwire/cluster";
import type { NatsUsers } from "./nats-users.ts";
import { startPrivateNatsServer, type PrivateNatsServer } from "./private-nats-server.ts";
import { destroyNamespace } from "./cleanup.ts";
import { serveTopologyControl } from "./topology-control.ts";
import { startTopology, type CellPlan, type Topology } from "./topology.ts";

export type TestTopology = {
  readonly namespace: string;
  readonly topology: Topology;
  readonly output: string[];
  /** The NATS servers the topology's processes use. */
  readonly natsServers: readonly string[];
  /** The admin HTTP API's URL and token, when the options asked for it (adminApi: true). */
  readonly adminApi: { readonly url: string; readonly token: string } | undefined;
  /** A connection as one of the topology's NATS users (the admin's by default), closed by the caller. */
  connectNats(service?: NatsService): Promise<NatsConnection>;
  /** The environment a `cellwire` command needs to reach this topology's NATS as `service` (admin by default). */
  natsEnvironment(service?: NatsService): Record<string, string>;
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
  /**
   * The NATS servers every process connects to (default: a private server from the shipped configuration),
   * and the users they run with (default: none, for servers that ask for no credentials).
   */
  readonly natsServers?: readonly string[];
  readonly natsUsers?: NatsUsers;
  /** The Redis the directory uses and the cleanup empties (default: the machine's, testServices.redisUrl). */
  readonly redisUrl?: string;
  /** Runs the admin HTTP API too (cellwire-admin), on a free port with a fresh token. */
  readonly adminApi?: boolean;
};

export async function startTestTopology(options: TestTopologyOptions): Promise<TestTopology> {
  const namespace = uniqueNamespace(options.label);
  const cells = options.cells ?? [
    { cellId: "a", workerCount: 2 },
    { cellId: "b", workerCount: 2 },
  ];
  const output: string[] = [];
  const outputLinesMax = 5000;
  const natsServer: PrivateNatsServer | undefined = options.natsServers === undefined ? await startPrivateNatsServer() : undefined;
  const natsUsers = natsServer?.users ?? options.natsUsers;
  const accessOf = (service: NatsService): NatsAccess => natsUsers?.access(service) ?? anonymousNatsAccess(service);
  const services = {
    ...testServices,
    natsServers: options.natsServers ?? (natsServer === undefined ? testServices.natsServers : [natsServer.clientUrl]),
    natsAccess: accessOf("admin"),
    redisUrl: options.redisUrl ?? testServices.redisUrl,
  };
  const adminToken = randomBytes(32).toString("base64url");
  const natsEnvironment = (service: NatsService = "admin"): Record<string, string> =>
    natsUsers?.environmentFor(service, services.natsServers) ?? { CELLWIRE_NATS_SERVERS: services.natsServers.join(",") };
  const start = (): Promise<Topology> =>
    startTopology({
      namespace,
      ...services,
      natsEnvironment,
      cells,
      edgePorts: Array.from({ length: options.edgeCount ?? 2 }, () => 0),
      edgeHost: "127.0.0.1",
      ...(options.adminApi === true ? { adminApi: { port: 0, token: adminToken } } : {}),
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
    await natsServer?.stop();
    throw new Error(`${String(error)}\n${output.slice(-60).join("\n")}`);
  }
  // Like the launcher of `npm start`, the test topology starts cells that `cellwire add-cell` asks for.
  const connectAs = async (service: NatsService, name: string): Promise<NatsConnection> =>
    connect({ ...(await natsConnectOptions(accessOf(service))), servers: [...services.natsServers], name });
  const control = await connectAs("launcher", `cellwire-test-launcher-${namespace}`);
  serveTopologyControl(control, namespace, () => topology);
  const handle: TestTopology = {
    namespace,
    get topology() {
      return topology;
    },
    output,
    natsServers: services.natsServers,
    get adminApi() {
      const url = topology.adminApiUrl;
      return url === undefined ? undefined : { url, token: adminToken };
    },
    connectNats: (service = "admin") => connectAs(service, `cellwire-test-${service}-${namespace}`),
    natsEnvironment,
    stopProcesses: () => topology.stop(),
    restart: async () => {
      topology = await start();
      return topology;
    },
    destroy: async (natsServers = services.natsServers) => {
      await control.close().catch(() => undefined);
      await topology.stop();
      try {
        await destroyNamespace({ namespace, cellIds: topology.cellIds, ...services, natsServers });
      } finally {
        await natsServer?.stop();
      }
      // Every topology test is also a test of the shipped permissions: a grant a service lacks fails it.
      const refused = output.filter((line) => line.includes("Permissions Violation"));
      if (refused.length > 0) throw new Error(`the NATS server refused what a service did:\n${refused.slice(0, 10).join("\n")}`);
    },
  };
  return handle;
}

/** Places users on chosen cells through the directory, so a test knows which cell each user lives in. */
export async function placeUsers(test: TestTopology, placements: readonly (readonly [userId: string, cellId: string])[]): Promise<void> {
  const connection = await test.connectNats("admin");
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
