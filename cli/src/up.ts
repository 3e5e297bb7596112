// `cellwire up` (npm start): checks the services, builds the dev web page, runs the directory, cells a
// and b with two workers each and two edges, prints where to go, and stops everything on Ctrl-C/SIGTERM.
// Unless CELLWIRE_NATS_SERVERS names servers, it runs them on a private nats-server started from the
// shipped configuration (config/nats/cellwire.conf), each process as its service's user; the admin's
// password goes to a file only the user can read, for the operator commands it prints.
import { chmod, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { EnvironmentReader, natsConnectOptions, readNatsAccess, type Environment, type NatsAccess } from "@cellwire/cluster";
import { namespacePattern } from "@cellwire/protocol";
import { buildWebPage } from "@cellwire/web";
import { servicesToCheck, unreachableServices } from "./preflight.ts";
import { connect } from "@nats-io/transport-node";
import { startPrivateNatsServer, type PrivateNatsServer } from "./private-nats-server.ts";
import { serveTopologyControl } from "./topology-control.ts";
import { startTopology, type CellPlan } from "./topology.ts";

export type UpConfig = {
  readonly namespace: string;
  /** CELLWIRE_NATS_SERVERS; unset: a private nats-server from the shipped configuration. */
  readonly natsServers: string[] | undefined;
  /** The launcher's own NATS user on servers named by CELLWIRE_NATS_SERVERS (CELLWIRE_NATS_USER...). */
  readonly natsAccess: NatsAccess;
  readonly redisUrl: string;
  readonly postgresAdminUrl: string;
  readonly edgeHost: string;
  readonly edgePorts: number[];
  readonly cells: CellPlan[];
};

export function loadUpConfig(environment: Environment): UpConfig {
  const reader = new EnvironmentReader(environment, []);
  const ports = reader
    .string("CELLWIRE_EDGE_PORTS", "8080,8081", /^\d+(,\d+)*$/)
    .split(",")
    .map(Number);
  return {
    namespace: reader.string("CELLWIRE_NAMESPACE", "cellwire", namespacePattern),
    natsServers: reader
      .optionalString("CELLWIRE_NATS_SERVERS")
      ?.split(",")
      .filter((server) => server !== ""),
    natsAccess: readNatsAccess(reader, "launcher"),
    redisUrl: reader.string("DIRECTORY_REDIS_URL", "redis://127.0.0.1:6379"),
    postgresAdminUrl: reader.string("WORKER_POSTGRES_ADMIN_URL", "postgres://postgres@127.0.0.1:5432/postgres"),
    edgeHost: reader.string("CELLWIRE_EDGE_HOST", "127.0.0.1"),
    edgePorts: ports,
    cells: [
      { cellId: "a", workerCount: 2 },
      { cellId: "b", workerCount: 2 },
    ],
  };
}

export async function runUp(environment: Environment): Promise<number> {
  process.title = "cellwire-launcher";
  const config = loadUpConfig(environment);
  let natsServer: PrivateNatsServer | undefined;
  let secretsDirectory: string | undefined;
  if (config.natsServers === undefined) {
    process.stdout.write("starting a private nats-server from config/nats/cellwire.conf…\n");
    natsServer = await startPrivateNatsServer();
    secretsDirectory = await mkdtemp(join(tmpdir(), "cellwire-secrets-"));
    await chmod(secretsDirectory, 0o700);
    await writeFile(join(secretsDirectory, "nats-admin-password"), `${natsServer.user("admin").password}\n`, { mode: 0o600 });
  }
  const natsServers = natsServer === undefined ? (config.natsServers ?? []) : [natsServer.clientUrl];
  const launcherAccess: NatsAccess = natsServer === undefined ? config.natsAccess : natsServer.users.access("launcher");
  const cleanUp = async (): Promise<void> => {
    await natsServer?.stop();
    if (secretsDirectory !== undefined) await rm(secretsDirectory, { recursive: true, force: true });
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
  const topology = await startTopology({
    namespace: config.namespace,
    natsServers,
    ...(natsServer === undefined
      ? {}
      : { natsEnvironment: (service: "edge" | "worker" | "directory") => natsServer.environmentFor(service) }),
    redisUrl: config.redisUrl,
    postgresAdminUrl: config.postgresAdminUrl,
    cells: config.cells,
    edgePorts: config.edgePorts,
    edgeHost: config.edgeHost,
    webDirectory,
    onOutput: (processName, line) => process.stdout.write(`[${processName}] ${line}\n`),
    onUnexpectedExit: (processName, code) => {
      if (!stopping) process.stderr.write(`cellwire: ${processName} exited unexpectedly (status ${String(code)})\n`);
    },
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
      "",
      "Try it:",
      "  npx cellwire token alice                      # a dev token for alice",
      `  npx cellwire listen --as bob${second === undefined ? "" : ` --edge ${second.webSocketUrl}`}`,
      `  npx cellwire send --as alice --to bob "hello"${first === undefined ? "" : ` --edge ${first.webSocketUrl}`}`,
      `  or open ${first?.httpUrl ?? "the web page"} in two browser tabs (one per user).`,
      "  npx cellwire migrate alice b                  # move alice's mailbox to cell b while she chats",
      "  npx cellwire add-cell c                       # start cell c here; new users go there by weight",
      "",
      ...(secretsDirectory === undefined
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
