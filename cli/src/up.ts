// `cellwire up` (npm start): checks the services, builds the dev web page, runs the directory, cells a
// and b with two workers each and two edges, prints where to go, and stops everything on Ctrl-C/SIGTERM.
// Unless CELLWIRE_NATS_SERVERS names servers, it runs them on a private nats-server started from the
// shipped configuration (config/nats/cellwire.conf), each process as its service's user; the admin's
// password goes to a file only the user can read, for the operator commands it prints. With
// --nats-cluster (or CELLWIRE_NATS_CLUSTER_NODES) that NATS is a JetStream cluster on loopback instead,
// every process given every node's URL and the membership buckets replicated three times, so one node
// can be killed under traffic (docs/decisions/0030). The processes' JSON log lines are shown pretty printed,
// one line each.
import { randomBytes } from "node:crypto";
import { chmod, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ConfigError, EnvironmentReader, natsConnectOptions, readNatsAccess, type Environment, type NatsAccess } from "@cellwire/cluster";
import { namespacePattern } from "@cellwire/protocol";
import { buildWebPage } from "@cellwire/web";
import { createLogLinePrinter } from "./log-line-printer.ts";
import { servicesToCheck, unreachableServices } from "./preflight.ts";
import { connect } from "@nats-io/transport-node";
import { startNatsCluster, type NatsNode } from "./nats-cluster.ts";
import { isExecutableFile, locateNatsServer } from "./nats-server-process.ts";
import type { NatsUsers } from "./nats-users.ts";
import { startPrivateNatsServer } from "./private-nats-server.ts";
import { serveTopologyControl } from "./topology-control.ts";
import { startTopology, type CellPlan } from "./topology.ts";

export type UpConfig = {
  readonly namespace: string;
  /** CELLWIRE_NATS_SERVERS; unset: a private nats-server (or cluster) from the shipped configuration. */
  readonly natsServers: string[] | undefined;
  /**
   * Nodes of the private NATS cluster (CELLWIRE_NATS_CLUSTER_NODES, or 3 with --nats-cluster); 0: one
   * private nats-server. At least 3, so that a bucket replicated three times keeps a quorum after losing one.
   */
  readonly natsClusterNodeCount: number;
  /** The launcher's own NATS user on servers named by CELLWIRE_NATS_SERVERS (CELLWIRE_NATS_USER...). */
  readonly natsAccess: NatsAccess;
  readonly redisUrl: string;
  readonly postgresAdminUrl: string;
  readonly edgeHost: string;
  readonly edgePorts: number[];
  /** Where the admin HTTP API listens on 127.0.0.1 (ADMIN_PORT, default 8090; 0: a free port). */
  readonly adminPort: number;
  readonly cells: CellPlan[];
};

/** What the command line adds to the environment: `cellwire up --nats-cluster`. */
export type UpFlags = { readonly natsCluster: boolean };

/** The cluster --nats-cluster starts: the smallest that keeps a quorum after losing a node. */
export const natsClusterNodeCountDefault = 3;
const natsClusterNodeCountMin = 3;
const natsClusterNodeCountMax = 7;
/** The membership buckets' replicas on a private cluster (WORKER_KV_REPLICAS): a node may die, no bucket goes with it. */
export const natsClusterBucketReplicas = 3;

export function loadUpConfig(environment: Environment, flags: UpFlags = { natsCluster: false }): UpConfig {
  const reader = new EnvironmentReader(environment, []);
  const natsServers = reader
    .optionalString("CELLWIRE_NATS_SERVERS")
    ?.split(",")
    .filter((server) => server !== "");
  const natsClusterNodeCount = readNatsClusterNodeCount(reader, flags);
  if (natsClusterNodeCount > 0 && natsServers !== undefined)
    throw new ConfigError("a private NATS cluster (--nats-cluster, CELLWIRE_NATS_CLUSTER_NODES) cannot run with CELLWIRE_NATS_SERVERS set");
  const ports = reader
    .string("CELLWIRE_EDGE_PORTS", "8080,8081", /^\d+(,\d+)*$/)
    .split(",")
    .map(Number);
  return {
    namespace: reader.string("CELLWIRE_NAMESPACE", "cellwire", namespacePattern),
    natsServers,
    natsClusterNodeCount,
    natsAccess: readNatsAccess(reader, "launcher"),
    redisUrl: reader.string("DIRECTORY_REDIS_URL", "redis://127.0.0.1:6379"),
    postgresAdminUrl: reader.string("WORKER_POSTGRES_ADMIN_URL", "postgres://postgres@127.0.0.1:5432/postgres"),
    edgeHost: reader.string("CELLWIRE_EDGE_HOST", "127.0.0.1"),
    edgePorts: ports,
    adminPort: reader.integer("ADMIN_PORT", 8090, 0, 65_535),
    cells: [
      { cellId: "a", workerCount: 2 },
      { cellId: "b", workerCount: 2 },
    ],
  };
}

function readNatsClusterNodeCount(reader: EnvironmentReader, flags: UpFlags): number {
  const configured = reader.integer("CELLWIRE_NATS_CLUSTER_NODES", 0, 0, natsClusterNodeCountMax);
  if (configured > 0 && configured < natsClusterNodeCountMin)
    throw new ConfigError(
      `CELLWIRE_NATS_CLUSTER_NODES=${configured} must be 0 (one nats-server) or ${natsClusterNodeCountMin} to ${natsClusterNodeCountMax}`,
    );
  return configured === 0 && flags.natsCluster ? natsClusterNodeCountDefault : configured;
}

/** The NATS a topology runs on, as `cellwire up` prepared it; stop() takes down what it started. */
type LocalNats = {
  readonly servers: string[];
  readonly launcherAccess: NatsAccess;
  /** The users of a NATS this launcher started (each process connects as its service's); undefined on servers named by CELLWIRE_NATS_SERVERS. */
  readonly users: NatsUsers | undefined;
  /** Extra environment for every process (the buckets' replicas on a cluster). */
  readonly processEnvironment: Readonly<Record<string, string>>;
  /** Lines of the startup banner that describe it. */
  readonly bannerLines: string[];
  stop(): Promise<void>;
};

export class NatsServerMissingError extends Error {
  override readonly name = "NatsServerMissingError";
}

/** Starts the private nats-server or cluster `config` asks for, or takes the servers it names. */
async function startLocalNats(config: UpConfig, environment: Environment): Promise<LocalNats> {
  const external = config.natsServers;
  if (external !== undefined)
    return {
      servers: external,
      launcherAccess: config.natsAccess,
      users: undefined,
      processEnvironment: {},
      bannerLines: [],
      stop: async () => {},
    };
  const serverBinary = locateNatsServer(environment["PATH"], isExecutableFile);
  if (serverBinary === undefined)
    throw new NatsServerMissingError(
      "nats-server is not installed (not at /usr/sbin/nats-server nor on PATH): install it (apt-get install nats-server, or " +
        "https://docs.nats.io/running-a-nats-service/introduction/installation), or name running servers in CELLWIRE_NATS_SERVERS",
    );
  if (config.natsClusterNodeCount === 0) {
    process.stdout.write("starting a private nats-server from config/nats/cellwire.conf…\n");
    const server = await startPrivateNatsServer({ serverBinary });
    const servers = [server.clientUrl];
    return {
      servers,
      launcherAccess: server.users.access("launcher"),
      users: server.users,
      processEnvironment: {},
      bannerLines: [],
      stop: () => server.stop(),
    };
  }
  process.stdout.write(`starting a ${config.natsClusterNodeCount}-node NATS cluster on loopback from config/nats/cellwire.conf…\n`);
  const cluster = await startNatsCluster({ nodeCount: config.natsClusterNodeCount, serverBinary });
  return {
    servers: cluster.servers,
    launcherAccess: cluster.users.access("launcher"),
    users: cluster.users,
    processEnvironment: { WORKER_KV_REPLICAS: String(natsClusterBucketReplicas) },
    bannerLines: natsClusterBanner(cluster.nodes),
    stop: () => cluster.stop(),
  };
}

/** The nodes, with what an operator needs to watch one (its monitoring port) and to kill one (its pid). */
export function natsClusterBanner(nodes: readonly NatsNode[]): string[] {
  return [
    `  NATS cluster of ${nodes.length} nodes (membership buckets replicated ${natsClusterBucketReplicas} times):`,
    ...nodes.map(
      (node) =>
        `    nats ${node.name}: client ${node.clientUrl}   monitoring ${node.monitorUrl}   pid ${node.pid === undefined ? "?" : String(node.pid)}`,
    ),
    "    kill one node (kill <pid>): every process reconnects to a survivor and nothing is lost",
  ];
}

export async function runUp(environment: Environment, flags: UpFlags = { natsCluster: false }): Promise<number> {
  process.title = "cellwire-launcher";
  const config = loadUpConfig(environment, flags);
  let nats: LocalNats;
  try {
    nats = await startLocalNats(config, environment);
  } catch (error) {
    if (!(error instanceof NatsServerMissingError)) throw error;
    process.stderr.write(`cellwire: cannot start the topology.\n- ${error.message}\n`);
    return 1;
  }
  // Local secrets live in a directory only this user can read: the admin's NATS password (on a NATS this
  // launcher started) and the admin API's token, fresh for each run.
  const natsUsers = nats.users;
  const secretsDirectory = await mkdtemp(join(tmpdir(), "cellwire-secrets-"));
  await chmod(secretsDirectory, 0o700);
  if (natsUsers !== undefined)
    await writeFile(join(secretsDirectory, "nats-admin-password"), `${natsUsers.user("admin").password}\n`, { mode: 0o600 });
  const adminToken = randomBytes(32).toString("base64url");
  const adminTokenFile = join(secretsDirectory, "admin-token");
  await writeFile(adminTokenFile, `${adminToken}\n`, { mode: 0o600 });
  const natsServers = nats.servers;
  const launcherAccess = nats.launcherAccess;
  const cleanUp = async (): Promise<void> => {
    await nats.stop();
    await rm(secretsDirectory, { recursive: true, force: true });
  };
  const problems = await unreachableServices(servicesToCheck(natsServers, config.redisUrl, config.postgresAdminUrl));
  if (problems.length > 0) {
    process.stderr.write(`cellwire: cannot start the topology.\n${problems.map((problem) => `- ${problem}`).join("\n")}\n`);
    await cleanUp();
    return 1;
  }
  process.stdout.write("building the dev web page…\n");
  const webDirectory = await buildWebPage();
  process.stdout.write(
    `starting the directory, cells ${config.cells.map((cell) => cell.cellId).join(" and ")} and ${config.edgePorts.length} edges…\n`,
  );
  let stopping = false;
  // The services log JSON (docs/decisions/0033); a person at this terminal reads them pretty printed.
  const printLogLine = createLogLinePrinter({ colorize: process.stdout.isTTY });
  const topology = await startTopology({
    namespace: config.namespace,
    natsServers,
    ...(natsUsers === undefined
      ? {}
      : { natsEnvironment: (service: "edge" | "worker" | "directory" | "admin") => natsUsers.environmentFor(service, natsServers) }),
    extraEnvironment: nats.processEnvironment,
    redisUrl: config.redisUrl,
    postgresAdminUrl: config.postgresAdminUrl,
    cells: config.cells,
    edgePorts: config.edgePorts,
    edgeHost: config.edgeHost,
    adminApi: { port: config.adminPort, token: adminToken },
    webDirectory,
    onOutput: (processName, line) => process.stdout.write(`[${processName}] ${printLogLine(line)}\n`),
    onUnexpectedExit: (processName, code) => {
      if (!stopping) process.stderr.write(`cellwire: ${processName} exited unexpectedly (status ${String(code)})\n`);
    },
  }).catch(async (error: unknown) => {
    // A topology that did not start leaves no nats-server (nor its store) behind.
    await cleanUp();
    throw error;
  });
  // `cellwire add-cell` asks this launcher to start a new cell's workers as its children.
  const control = await connect({
    ...(await natsConnectOptions(launcherAccess)),
    servers: natsServers,
    name: "cellwire-launcher",
    maxReconnectAttempts: -1,
  });
  serveTopologyControl(control, config.namespace, () => topology);
  const [first, second] = topology.edges;
  process.stdout.write(
    [
      "",
      "Cellwire is running:",
      ...topology.edges.map((edge) => `  edge ${edge.edgeId}: ${edge.webSocketUrl}   web page: ${edge.httpUrl}`),
      `  processes: ${topology.processNames.join(", ")}`,
      ...nats.bannerLines,
      "",
      "Try it:",
      "  npx cellwire token alice                      # a dev token for alice",
      `  npx cellwire listen --as bob${second === undefined ? "" : ` --edge ${second.webSocketUrl}`}`,
      `  npx cellwire send --as alice --to bob "hello"${first === undefined ? "" : ` --edge ${first.webSocketUrl}`}`,
      `  or open ${first?.httpUrl ?? "the web page"} in two browser tabs (one per user).`,
      "  npx cellwire migrate alice b                  # move alice's mailbox to cell b while she chats",
      "  npx cellwire add-cell c                       # start cell c here; new users go there by weight",
      "",
      "Operator commands through the admin HTTP API (docs/admin-api.md):",
      `  export CELLWIRE_ADMIN_URL=${topology.adminApiUrl ?? ""} CELLWIRE_ADMIN_TOKEN=$(cat ${adminTokenFile})`,
      "",
      ...(natsUsers === undefined
        ? []
        : [
            "Operator commands (migrate, add-cell, ring, revoke…) reach this NATS as its admin user:",
            `  export CELLWIRE_NATS_SERVERS=${natsServers.join(",")} CELLWIRE_NATS_USER=admin CELLWIRE_NATS_PASSWORD_FILE=${join(secretsDirectory, "nats-admin-password")}`,
            "",
          ]),
      "Ctrl-C stops everything.",
      "",
    ].join("\n"),
  );
  await new Promise<void>((resolve) => {
    const stop = (): void => {
      if (stopping) return;
      stopping = true;
      process.stdout.write("stopping…\n");
      void control
        .close()
        .catch(() => undefined)
        .then(() => topology.stop())
        .then(cleanUp)
        .then(resolve);
    };
    process.on("SIGINT", stop);
    process.on("SIGTERM", stop);
  });
  process.stdout.write("stopped.\n");
  return 0;
}
