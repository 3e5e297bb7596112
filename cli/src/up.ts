// `cellwire up` (npm start): checks the services, builds the dev web page, runs the directory, cells a
// and b with two workers each and two edges, prints where to go, and stops everything on Ctrl-C/SIGTERM.
import { EnvironmentReader, type Environment } from "@cellwire/cluster";
import { namespacePattern } from "@cellwire/protocol";
import { buildWebPage } from "@cellwire/web";
import { servicesToCheck, unreachableServices } from "./preflight.ts";
import { connect } from "@nats-io/transport-node";
import { serveTopologyControl } from "./topology-control.ts";
import { startTopology, type CellPlan } from "./topology.ts";

export type UpConfig = {
  readonly namespace: string;
  readonly natsServers: string[];
  readonly redisUrl: string;
  readonly postgresAdminUrl: string;
  readonly edgeHost: string;
  readonly edgePorts: number[];
  readonly cells: CellPlan[];
};

export function loadUpConfig(environment: Environment): UpConfig {
  const reader = new EnvironmentReader(environment, []);
  const ports = reader.string("CELLWIRE_EDGE_PORTS", "8080,8081", /^\d+(,\d+)*$/).split(",").map(Number);
  return {
    namespace: reader.string("CELLWIRE_NAMESPACE", "cellwire", namespacePattern),
    natsServers: reader.string("CELLWIRE_NATS_SERVERS", "127.0.0.1:4222").split(",").filter((server) => server !== ""),
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
  const problems = await unreachableServices(servicesToCheck(config.natsServers, config.redisUrl, config.postgresAdminUrl));
  if (problems.length > 0) {
    process.stderr.write(`cellwire: cannot start the topology.\n${problems.map((problem) => `- ${problem}`).join("\n")}\n`);
    return 1;
  }
  process.stdout.write("building the dev web page…\n");
  const webDirectory = await buildWebPage();
  process.stdout.write(`starting the directory, cells ${config.cells.map((cell) => cell.cellId).join(" and ")} and ${config.edgePorts.length} edges…\n`);
  let stopping = false;
  const topology = await startTopology({
    namespace: config.namespace,
    natsServers: config.natsServers,
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
  const control = await connect({ servers: config.natsServers, name: "cellwire-launcher", maxReconnectAttempts: -1 });
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
        .then(resolve);
    };
    process.on("SIGINT", stop);
    process.on("SIGTERM", stop);
  });
  process.stdout.write("stopped.\n");
  return 0;
}
