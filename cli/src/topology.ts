// Runs a local Cellwire topology as real processes: the directory, each cell's workers and the edges,
// each forked with its own environment. Used by `npm start` and by the integration tests, which run the
// same processes a user runs.
import { fork, type ChildProcess } from "node:child_process";
import { createRequire } from "node:module";
import { createInterface } from "node:readline";

const require = createRequire(import.meta.url);

export type CellPlan = { readonly cellId: string; readonly workerCount: number };

export type TopologyOptions = {
  readonly namespace: string;
  readonly natsServers: readonly string[];
  /**
   * What each service's process needs in its environment to connect as its NATS user (a private server's
   * credentials, docs/decisions/0015); none on a server that asks for no credentials.
   */
  readonly natsEnvironment?: (service: "edge" | "worker" | "directory" | "admin") => Readonly<Record<string, string>>;
  readonly redisUrl: string;
  readonly postgresAdminUrl: string;
  readonly cells: readonly CellPlan[];
  /** One edge per entry; 0 picks a free port. */
  readonly edgePorts: readonly number[];
  readonly edgeHost: string;
  readonly devKeyDirectory?: string;
  readonly webDirectory?: string;
  /** Extra environment for every child (lease timings in tests, for example). */
  readonly extraEnvironment?: Readonly<Record<string, string>>;
  /**
   * Node options added to every child's, by process name: the chat bench passes `--cpu-prof` with a
   * directory per process, so each profile names the process it came from.
   */
  readonly extraExecArgv?: (processName: string) => readonly string[];
  /** Receives each line a child prints, prefixed by its process name. */
  readonly onOutput: (processName: string, line: string) => void;
  readonly startDeadlineMs?: number;
  /**
   * Runs the admin HTTP API (`cellwire admin-api`) too, on 127.0.0.1 at `port` (0: a free one) with
   * `token`; its URL is then `adminApiUrl`.
   */
  readonly adminApi?: { readonly port: number; readonly token: string };
  /** Called when a child that was serving exits without being asked to. */
  readonly onUnexpectedExit?: (processName: string, code: number | null) => void;
};

export type EdgeAddress = { readonly edgeId: string; readonly port: number; readonly webSocketUrl: string; readonly httpUrl: string };

type Child = {
  readonly processName: string;
  readonly child: ChildProcess;
  readonly exited: Promise<number | null>;
  readonly entry: string;
  readonly environment: Record<string, string>;
  /** The admin listener's port (/metrics, /livez, /readyz) a worker or the directory told in its ready message. */
  adminPort?: number;
};

/** A running child: its pid (the benches read CPU and memory from /proc) and, for workers and the directory, its admin port. */
export type TopologyProcess = { readonly processName: string; readonly pid: number; readonly adminPort?: number };

/**
 * What every edge of a local topology runs with, unless extraEnvironment says otherwise. It is a dev rig
 * (`npm start`, the tests, the benchmarks sign dev tokens), so dev mode is asked for here explicitly; and
 * a load-test rig whose clients all come from 127.0.0.1, so the per-address limit and the unauthenticated
 * budget (a wave of 10,000 connects in the connections benchmark) are lifted above any session count.
 */
export const localEdgeEnvironment: Readonly<Record<string, string>> = {
  EDGE_AUTH_MODE: "dev",
  EDGE_CONNECTIONS_PER_ADDRESS_MAX: "100000",
  EDGE_UNAUTHENTICATED_MAX: "100000",
};

export class TopologyStartError extends Error {
  override readonly name = "TopologyStartError";
}

export class Topology {
  private readonly children: Child[] = [];
  private readonly addedCellIds: string[] = [];
  readonly edges: EdgeAddress[] = [];
  /** The admin API's base URL, when the options asked for one. */
  adminApiUrl: string | undefined;
  private stopping = false;

  constructor(private readonly options: TopologyOptions) {}

  get processNames(): string[] {
    return this.children.map((child) => child.processName);
  }

  /** The children running now. */
  processes(): TopologyProcess[] {
    const running: TopologyProcess[] = [];
    for (const { processName, child, adminPort } of this.children) {
      if (child.pid !== undefined && child.exitCode === null && child.signalCode === null)
        running.push({ processName, pid: child.pid, ...(adminPort === undefined ? {} : { adminPort }) });
    }
    return running;
  }

  /** Sends `signal` to one process by name (chaos tests); returns its exit promise. */
  signal(processName: string, signal: NodeJS.Signals): Promise<number | null> {
    const child = this.children.find((candidate) => candidate.processName === processName);
    if (child === undefined) throw new Error(`no process named ${processName}`);
    child.child.kill(signal);
    return child.exited;
  }

  /**
   * Starts again a process that exited (after a kill in a chaos test or a benchmark), with the same
   * environment; resolves once it is ready. An edge comes back on the port it had (even one started on
   * port 0), so the edge URLs clients hold reach it again, as they would a restarted edge in production.
   */
  async respawn(processName: string): Promise<void> {
    const index = this.children.findIndex((candidate) => candidate.processName === processName);
    const previous = this.children[index];
    if (previous === undefined) throw new Error(`no process named ${processName}`);
    if (previous.child.exitCode === null && previous.child.signalCode === null) throw new Error(`${processName} is still running`);
    this.children.splice(index, 1);
    const edge = this.edges.find((address) => `cellwire-edge-${address.edgeId}` === processName);
    const environment = edge === undefined ? previous.environment : { ...previous.environment, EDGE_PORT: String(edge.port) };
    await this.spawn(processName, previous.entry, environment);
  }

  /** Starts one more worker in a cell at runtime (named after the cell's highest worker number + 1). */
  async addWorker(cellId: string): Promise<string> {
    const prefix = `cellwire-worker-${cellId}-`;
    const numbers = this.children
      .filter((child) => child.processName.startsWith(prefix))
      .map((child) => Number(child.processName.slice(prefix.length)));
    const next = Math.max(0, ...numbers) + 1;
    await this.spawn(`${prefix}${next}`, "@cellwire/cells/main", this.workerEnvironment(cellId, next));
    return `${cellId}-${next}`;
  }

  /**
   * Starts the workers of a cell at runtime (`cellwire add-cell`): they create and migrate its database and
   * register it with the directory under `weight`; resolves with their worker ids once all are ready.
   */
  async addCell(cellId: string, workerCount: number, weight: number): Promise<string[]> {
    if (this.cellIds.includes(cellId)) throw new TopologyStartError(`cell ${cellId} already runs in this topology`);
    this.addedCellIds.push(cellId);
    const workerIds = Array.from({ length: workerCount }, (_, index) => `${cellId}-${index + 1}`);
    await Promise.all(
      workerIds.map((workerId, index) =>
        this.spawn(`cellwire-worker-${workerId}`, "@cellwire/cells/main", {
          ...this.workerEnvironment(cellId, index + 1),
          WORKER_CELL_WEIGHT: String(weight),
        }),
      ),
    );
    return workerIds;
  }

  /** Every cell this topology runs, those added at runtime included (their databases need cleaning up too). */
  get cellIds(): string[] {
    return [...this.options.cells.map((cell) => cell.cellId), ...this.addedCellIds];
  }

  private workerEnvironment(cellId: string, number: number): Record<string, string> {
    return { WORKER_CELL_ID: cellId, WORKER_ID: `${cellId}-${number}`, WORKER_POSTGRES_ADMIN_URL: this.options.postgresAdminUrl };
  }

  async start(): Promise<void> {
    try {
      await this.spawn("cellwire-directory", "@cellwire/directory/main", { DIRECTORY_REDIS_URL: this.options.redisUrl });
      await Promise.all(
        this.options.cells.flatMap(({ cellId, workerCount }) =>
          Array.from({ length: workerCount }, (_, index) =>
            this.spawn(`cellwire-worker-${cellId}-${index + 1}`, "@cellwire/cells/main", this.workerEnvironment(cellId, index + 1)),
          ),
        ),
      );
      const ports = await Promise.all(
        this.options.edgePorts.map((port, index) =>
          this.spawn(`cellwire-edge-${index + 1}`, "@cellwire/edge/main", {
            ...localEdgeEnvironment,
            ...this.options.extraEnvironment,
            EDGE_ID: String(index + 1),
            EDGE_PORT: String(port),
            EDGE_HOST: this.options.edgeHost,
            ...(this.options.devKeyDirectory === undefined ? {} : { EDGE_DEV_KEY_DIR: this.options.devKeyDirectory }),
            ...(this.options.webDirectory === undefined ? {} : { EDGE_WEB_DIR: this.options.webDirectory }),
          }),
        ),
      );
      ports.forEach((port, index) => {
        const host = this.options.edgeHost;
        this.edges.push({ edgeId: String(index + 1), port, webSocketUrl: `ws://${host}:${port}/ws`, httpUrl: `http://${host}:${port}/` });
      });
      const adminApi = this.options.adminApi;
      if (adminApi !== undefined) {
        const port = await this.spawn("cellwire-admin", "@cellwire/cli/admin-api/main", {
          ADMIN_HOST: "127.0.0.1",
          ADMIN_PORT: String(adminApi.port),
          ADMIN_TOKEN: adminApi.token,
        });
        this.adminApiUrl = `http://127.0.0.1:${port}`;
      }
    } catch (error) {
      await this.stop();
      throw error;
    }
  }

  /**
   * SIGTERM to every child (edges first, so clients leave before their cells do), SIGKILL past the
   * deadline: above an edge's default drain (EDGE_DRAIN_MS + EDGE_DRAIN_GRACE_MS + 5 s, docs/decisions/0013),
   * so `npm start` stopped with clients connected lets its edges drain.
   */
  async stop(deadlineMs = 20_000): Promise<void> {
    this.stopping = true;
    const order = [...this.children].reverse();
    for (const { child } of order) if (child.exitCode === null && child.signalCode === null) child.kill("SIGTERM");
    const deadline = setTimeout(() => {
      for (const { child } of order) if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
    }, deadlineMs);
    await Promise.all(order.map(({ exited }) => exited));
    clearTimeout(deadline);
  }

  private spawn(processName: string, entry: string, environment: Record<string, string>): Promise<number> {
    const child = fork(require.resolve(entry), [], {
      execArgv: ["--import", "tsx", ...(this.options.extraExecArgv?.(processName) ?? [])],
      env: {
        ...process.env,
        ...this.options.extraEnvironment,
        CELLWIRE_NAMESPACE: this.options.namespace,
        CELLWIRE_NATS_SERVERS: this.options.natsServers.join(","),
        ...this.options.natsEnvironment?.(serviceOf(entry)),
        ...environment,
      },
      stdio: ["ignore", "pipe", "pipe", "ipc"],
    });
    const exited = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)));
    void exited.then((code) => {
      if (!this.stopping) this.options.onUnexpectedExit?.(processName, code);
    });
    const record: Child = { processName, child, exited, entry, environment };
    this.children.push(record);
    for (const stream of [child.stdout, child.stderr]) {
      if (stream === null) continue;
      createInterface({ input: stream }).on("line", (line) => this.options.onOutput(processName, line));
    }
    const deadlineMs = this.options.startDeadlineMs ?? 60_000;
    return new Promise<number>((resolve, reject) => {
      const timer = setTimeout(() => reject(new TopologyStartError(`${processName} was not ready within ${deadlineMs} ms`)), deadlineMs);
      child.on("message", (message: unknown) => {
        if (typeof message !== "object" || message === null) return;
        const { type, port, adminPort } = message as { type?: unknown; port?: unknown; adminPort?: unknown };
        if (type === "ready") {
          clearTimeout(timer);
          if (typeof adminPort === "number" && Number.isInteger(adminPort)) record.adminPort = adminPort;
          resolve(typeof port === "number" ? port : 0);
        } else if (type === "failed") {
          clearTimeout(timer);
          const why = (message as { message?: unknown }).message;
          reject(new TopologyStartError(`${processName} failed to start: ${typeof why === "string" ? why : "unknown reason"}`));
        }
      });
      void exited.then((code) => {
        clearTimeout(timer);
        if (!this.stopping) reject(new TopologyStartError(`${processName} exited with status ${String(code)} before it was ready`));
      });
    });
  }
}

export async function startTopology(options: TopologyOptions): Promise<Topology> {
  const topology = new Topology(options);
  await topology.start();
  return topology;
}

/** The NATS user a process entry connects as. */
function serviceOf(entry: string): "edge" | "worker" | "directory" | "admin" {
  if (entry.startsWith("@cellwire/edge/")) return "edge";
  if (entry.startsWith("@cellwire/cli/admin-api/")) return "admin";
  if (entry.startsWith("@cellwire/cells/")) return "worker";
  if (entry.startsWith("@cellwire/directory/")) return "directory";
  throw new TopologyStartError(`no NATS user for ${entry}`);
}
