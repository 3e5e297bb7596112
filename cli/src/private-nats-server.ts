// One nats-server of our own, started from the configuration the repo ships (config/nats/cellwire.conf),
// so that a local topology (`npm start`, each integration test's) runs behind the same users and
// permissions a deployment does (docs/decisions/0015). It listens on a free loopback port (nats-server
// takes no port 0: one is picked by binding port 0 first), keeps its JetStream store in a temporary
// directory, and gets a fresh random password per service through its environment, never its arguments.
import type { ChildProcess } from "node:child_process";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { NatsService } from "@cellwire/cluster";
import { defaultServerBinary, freeLoopbackPorts, spawnNatsServer } from "./nats-server-process.ts";
import { natsConfigPath, NatsUsers, type NatsUser } from "./nats-users.ts";

export class PrivateNatsServerError extends Error {
  override readonly name = "PrivateNatsServerError";
}

const loopbackHost = "127.0.0.1";
/** Log lines kept for an error message. */
const outputLinesMax = 200;
const exitWaitMs = 5000;

/** One run of the server process: it can be crashed and started again on the same port and store. */
type ServerProcess = { readonly child: ChildProcess; readonly exited: Promise<void> };

export class PrivateNatsServer {
  private stopped = false;
  private readonly killOnExit = (): void => {
    const { child } = this.running;
    if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
  };

  constructor(
    /** host:port, as CELLWIRE_NATS_SERVERS takes it. */
    readonly clientUrl: string,
    readonly users: NatsUsers,
    private running: ServerProcess,
    private readonly storeDirectory: string,
    readonly output: string[],
    /** Spawns the server again with its first arguments (same port, same store) and waits until it is ready. */
    private readonly respawn: () => Promise<ServerProcess>,
  ) {
    // A test runner that exits without calling stop() must not leave a server behind.
    process.once("exit", this.killOnExit);
  }

  /** The user and password of one service. */
  user(service: NatsService): NatsUser {
    return this.users.user(service);
  }

  /** What a child process of `service` needs in its environment to connect as that service. */
  environmentFor(service: NatsService): Record<string, string> {
    return this.users.environmentFor(service, [this.clientUrl]);
  }

  /**
   * Kills the server as a crash does (SIGKILL: no goodbye to its clients, no flush) and keeps its
   * JetStream store, so that restart() brings back the same streams and buckets, as a restarted node does.
   */
  async crash(): Promise<void> {
    const { child, exited } = this.running;
    if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
    await exited;
  }

  /** Starts the server again after crash(), on the same port and store; resolves once it is ready. */
  async restart(): Promise<void> {
    const { child } = this.running;
    if (this.stopped || (child.exitCode === null && child.signalCode === null))
      throw new PrivateNatsServerError("restart() needs a crashed server");
    this.running = await this.respawn();
  }

  /** Stops the server (SIGTERM, then SIGKILL) and removes its store. Idempotent. */
  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    process.off("exit", this.killOnExit);
    const { child, exited } = this.running;
    if (child.exitCode === null && child.signalCode === null) child.kill("SIGTERM");
    const timer = setTimeout(() => child.kill("SIGKILL"), exitWaitMs);
    await exited;
    clearTimeout(timer);
    await rm(this.storeDirectory, { recursive: true, force: true });
  }
}

export type PrivateNatsServerOptions = {
  readonly serverBinary?: string;
  readonly startDeadlineMs?: number;
  readonly onOutput?: (line: string) => void;
};

export async function startPrivateNatsServer(options: PrivateNatsServerOptions = {}): Promise<PrivateNatsServer> {
  const [port] = await freeLoopbackPorts(1);
  if (port === undefined) throw new PrivateNatsServerError("no free port");
  const storeDirectory = await mkdtemp(join(tmpdir(), "cellwire-nats-"));
  const users = NatsUsers.generate();
  const args = ["-c", natsConfigPath, "-a", loopbackHost, "-p", String(port), "-js", "-sd", storeDirectory];
  const output: string[] = [];
  const deadlineMs = options.startDeadlineMs ?? 20_000;
  const spawnReady = async (): Promise<ServerProcess> => {
    let ready: () => void = () => {};
    const readyLogged = new Promise<void>((resolve) => (ready = resolve));
    const spawned = spawnNatsServer(options.serverBinary ?? defaultServerBinary(), args, users, outputLinesMax, (line) => {
      output.push(line);
      if (output.length > outputLinesMax) output.shift();
      options.onOutput?.(line);
      if (line.includes("Server is ready")) ready();
    });
    let timer: ReturnType<typeof setTimeout> | undefined;
    const outcome = await Promise.race([
      readyLogged.then(() => "ready" as const),
      spawned.exited.then(() => "exited" as const),
      new Promise<"timeout">((resolve) => (timer = setTimeout(() => resolve("timeout"), deadlineMs))),
    ]);
    clearTimeout(timer);
    if (outcome !== "ready") {
      spawned.child.kill("SIGKILL");
      await spawned.exited;
      throw new PrivateNatsServerError(
        `nats-server ${outcome === "exited" ? "exited" : `was not ready within ${deadlineMs} ms`}:\n${output.slice(-20).join("\n")}`,
      );
    }
    return { child: spawned.child, exited: spawned.exited };
  };
  let first: ServerProcess;
  try {
    first = await spawnReady();
  } catch (error) {
    await rm(storeDirectory, { recursive: true, force: true });
    throw error;
  }
  return new PrivateNatsServer(`${loopbackHost}:${port}`, users, first, storeDirectory, output, spawnReady);
}
