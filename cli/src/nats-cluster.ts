// A JetStream cluster of real nats-server processes on loopback: what `cellwire up --nats-cluster`
// (npm start) runs its topology on, and what the tests that take a NATS node away under traffic start
// (cli/test/nats-cluster.ts adds their probes). Each node runs the shipped configuration
// (config/nats/cellwire.conf: a user per service, docs/decisions/0015) with the cluster's fresh passwords,
// and has its own client, route and monitoring port (free ports picked by binding port 0), its own store
// directory, and routes to every other node. Ready once every node names the same JetStream meta leader
// and that leader sees every peer current, so an R3 bucket can be created at once.
import type { ChildProcess } from "node:child_process";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { NatsService } from "@cellwire/cluster";
import { natsConfigPath, NatsUsers } from "./nats-users.ts";
import { defaultServerBinary, freeLoopbackPorts, spawnNatsServer } from "./nats-server-process.ts";

export type NatsClusterOptions = {
  /** Nodes in the cluster (default 3: the smallest that keeps a quorum after losing one). */
  readonly nodeCount?: number;
  /** The nats-server executable (default: Debian's /usr/sbin/nats-server, else `nats-server` on PATH). */
  readonly serverBinary?: string;
  /** How long the cluster may take to elect its JetStream meta leader (default 30 s). */
  readonly startDeadlineMs?: number;
  /** Receives each line a node logs, with the node's name. */
  readonly onOutput?: (nodeName: string, line: string) => void;
};

export type NatsNode = {
  /** The server name (`-n`), as the monitoring endpoints report it: `n1`, `n2`… */
  readonly name: string;
  /** host:port, as CELLWIRE_NATS_SERVERS takes it. */
  readonly clientUrl: string;
  readonly monitorUrl: string;
  /** The node's process id (undefined if it could not start), so an operator can kill one to watch a failover. */
  readonly pid: number | undefined;
};

export class NatsClusterError extends Error {
  override readonly name = "NatsClusterError";
}

const loopbackHost = "127.0.0.1";
const nodeCountMin = 2;
const nodeCountMax = 7;
const readyPollIntervalMs = 100;
/** One monitoring request; a node that does not answer within it counts as not ready, or as unreachable. */
const monitorRequestTimeoutMs = 1000;
/** Log lines kept per node for error messages. */
const outputLinesPerNodeMax = 200;
/** How long stop() and kill() wait for a SIGKILLed node to be reaped. */
const exitWaitMs = 5000;

type RunningNode = Omit<NatsNode, "pid"> & {
  readonly child: ChildProcess;
  readonly exited: Promise<void>;
  readonly output: string[];
};

export class NatsCluster {
  private stopped = false;
  private readonly killOnExit = (): void => {
    for (const node of this.running) if (isAlive(node.child)) node.child.kill("SIGKILL");
  };

  constructor(
    private readonly running: readonly RunningNode[],
    private readonly baseDirectory: string,
    /** The users every node knows, with this cluster's passwords. */
    readonly users: NatsUsers,
  ) {
    // A test runner that exits without calling stop() must not leave servers behind.
    process.once("exit", this.killOnExit);
  }

  get nodes(): readonly NatsNode[] {
    return this.running.map(({ name, clientUrl, monitorUrl, child }) => ({ name, clientUrl, monitorUrl, pid: child.pid }));
  }

  /** Every node's client URL, dead ones included (processes keep them all and skip the dead). */
  get servers(): string[] {
    return this.running.map((node) => node.clientUrl);
  }

  /**
   * What a child process of `service` needs in its environment to connect as that service: every node's
   * URL, so that it reconnects to a survivor when the node it is on dies.
   */
  environmentFor(service: NatsService): Record<string, string> {
    return this.users.environmentFor(service, this.servers);
  }

  /** Whether the node at `index` is still running. */
  isAlive(index: number): boolean {
    const node = this.running[index];
    return node !== undefined && isAlive(node.child);
  }

  /** Client URLs of the nodes still running. */
  liveServers(): string[] {
    return this.running.filter((node) => isAlive(node.child)).map((node) => node.clientUrl);
  }

  indexOf(nodeName: string): number {
    const index = this.running.findIndex((node) => node.name === nodeName);
    if (index < 0) throw new NatsClusterError(`no node named ${nodeName}`);
    return index;
  }

  /** SIGKILLs one node (no goodbye to its clients or peers); resolves once it is gone. */
  async kill(index: number): Promise<void> {
    const node = this.running[index];
    if (node === undefined) throw new NatsClusterError(`no node ${index} in a cluster of ${this.running.length}`);
    node.child.kill("SIGKILL");
    await withDeadline(node.exited, exitWaitMs, `node ${node.name} did not exit after SIGKILL`);
  }

  /** Kills every node and removes their store directories. Idempotent. */
  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    process.off("exit", this.killOnExit);
    for (const node of this.running) if (isAlive(node.child)) node.child.kill("SIGKILL");
    await Promise.all(
      this.running.map((node) => withDeadline(node.exited, exitWaitMs, `node ${node.name} did not exit`).catch(() => undefined)),
    );
    await rm(this.baseDirectory, { recursive: true, force: true });
  }

  /** The last lines each node logged, for an error message. */
  outputTail(linesPerNode = 20): string {
    return this.running
      .map((node) =>
        node.output
          .slice(-linesPerNode)
          .map((line) => `[${node.name}] ${line}`)
          .join("\n"),
      )
      .join("\n");
  }
}

export async function startNatsCluster(options: NatsClusterOptions = {}): Promise<NatsCluster> {
  const nodeCount = options.nodeCount ?? 3;
  if (!Number.isInteger(nodeCount) || nodeCount < nodeCountMin || nodeCount > nodeCountMax) {
    throw new NatsClusterError(`nodeCount must be ${nodeCountMin} to ${nodeCountMax}`);
  }
  const startDeadlineMs = options.startDeadlineMs ?? 30_000;
  const ports = await freeLoopbackPorts(nodeCount * 3);
  const baseDirectory = await mkdtemp(join(tmpdir(), "cellwire-nats-"));
  const clusterName = `cellwire_${process.pid}`;
  const plans = Array.from({ length: nodeCount }, (_, index) => ({
    name: `n${index + 1}`,
    clientPort: required(ports[index * 3]),
    routePort: required(ports[index * 3 + 1]),
    monitorPort: required(ports[index * 3 + 2]),
  }));
  const users = NatsUsers.generate();
  const running = plans.map((plan): RunningNode => {
    const routes = plans.filter((other) => other !== plan).map((other) => `nats://${loopbackHost}:${other.routePort}`);
    const args = [
      ...["-c", natsConfigPath],
      ...["-a", loopbackHost, "-p", String(plan.clientPort), "-m", String(plan.monitorPort), "-n", plan.name],
      ...["-js", "-sd", join(baseDirectory, plan.name)],
      ...["--cluster_name", clusterName, "--cluster", `nats://${loopbackHost}:${plan.routePort}`, "--routes", routes.join(",")],
    ];
    const { child, exited, output } = spawnNatsServer(
      options.serverBinary ?? defaultServerBinary(),
      args,
      users,
      outputLinesPerNodeMax,
      (line) => options.onOutput?.(plan.name, line),
    );
    return {
      name: plan.name,
      clientUrl: `${loopbackHost}:${plan.clientPort}`,
      monitorUrl: `http://${loopbackHost}:${plan.monitorPort}`,
      child,
      exited,
      output,
    };
  });
  const cluster = new NatsCluster(running, baseDirectory, users);
  try {
    await untilReady(running, startDeadlineMs);
  } catch (error) {
    const tail = cluster.outputTail();
    await cluster.stop();
    throw new NatsClusterError(`${error instanceof Error ? error.message : String(error)}\n${tail}`, { cause: error });
  }
  return cluster;
}

/** Polls every node's /jsz until all name one meta leader and that leader sees its peers current. */
async function untilReady(nodes: readonly RunningNode[], deadlineMs: number): Promise<void> {
  const deadlineAt = performance.now() + deadlineMs;
  let lastState = "no node answered yet";
  while (performance.now() < deadlineAt) {
    const dead = nodes.find((node) => !isAlive(node.child));
    if (dead !== undefined) throw new NatsClusterError(`node ${dead.name} exited while the cluster was starting`);
    const metas = await Promise.all(nodes.map((node) => fetchJson(`${node.monitorUrl}/jsz`).then(decodeMeta, () => undefined)));
    const leaders = [...new Set(metas.map((meta) => meta?.leader))];
    const leaderName = leaders.length === 1 ? leaders[0] : undefined;
    const leaderMeta = metas[nodes.findIndex((node) => node.name === leaderName)];
    if (leaderMeta !== undefined && leaderMeta.currentPeers === nodes.length - 1) return;
    lastState = `meta leaders seen: ${leaders.map((name) => name ?? "none").join(", ")}`;
    await new Promise((resolve) => setTimeout(resolve, readyPollIntervalMs));
  }
  throw new NatsClusterError(
    `the NATS cluster had no JetStream meta leader with every peer current within ${deadlineMs} ms (${lastState})`,
  );
}

type MetaState = { readonly leader: string | undefined; readonly currentPeers: number };

function decodeMeta(body: unknown): MetaState | undefined {
  if (!isRecord(body)) return undefined;
  const meta = body["meta_cluster"];
  if (!isRecord(meta)) return undefined;
  const leader = typeof meta["leader"] === "string" && meta["leader"] !== "" ? meta["leader"] : undefined;
  const replicas = Array.isArray(meta["replicas"]) ? meta["replicas"] : [];
  return { leader, currentPeers: replicas.filter((replica) => isRecord(replica) && replica["current"] === true).length };
}

async function fetchJson(url: string): Promise<unknown> {
  const response = await fetch(url, { signal: AbortSignal.timeout(monitorRequestTimeoutMs) });
  if (!response.ok) throw new NatsClusterError(`${url} answered ${response.status}`);
  return (await response.json()) as unknown;
}

function isAlive(child: ChildProcess): boolean {
  return child.exitCode === null && child.signalCode === null && child.pid !== undefined;
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

function required(port: number | undefined): number {
  if (port === undefined) throw new NatsClusterError("fewer free ports than asked for");
  return port;
}

async function withDeadline(promise: Promise<void>, deadlineMs: number, message: string): Promise<void> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    await Promise.race([
      promise,
      new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new NatsClusterError(message)), deadlineMs))),
    ]);
  } finally {
    clearTimeout(timer);
  }
}
