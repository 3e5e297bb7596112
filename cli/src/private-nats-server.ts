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
import { defaultServerBinary, freeLoopbackPorts, spawnNatsServer } from "./nats-cluster.ts";
import { natsConfigPath, NatsUsers, type NatsUser } from "./nats-users.ts";

export class PrivateNatsServerError extends Error {
  override readonly name = "PrivateNatsServerError";
}

const loopbackHost = "127.0.0.1";
/** Log lines kept for an error message. */
const outputLinesMax = 200;
const exitWaitMs = 5000;

export class PrivateNatsServer {
  private stopped = false;
  private readonly killOnExit = (): void => {
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill("SIGKILL");
  };

  constructor(
    /** host:port, as CELLWIRE_NATS_SERVERS takes it. */
    readonly clientUrl: string,
    readonly users: NatsUsers,
    private readonly child: ChildProcess,
    private readonly exited: Promise<void>,
    private readonly storeDirectory: string,
    readonly output: readonly string[],
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

  /** Stops the server (SIGTERM, then SIGKILL) and removes its store. Idempotent. */
  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    process.off("exit", this.killOnExit);
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill("SIGTERM");
    const timer = setTimeout(() => this.child.kill("SIGKILL"), exitWaitMs);
    await this.exited;
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
  let ready: () => void = () => {};
  const readyLogged = new Promise<void>((resolve) => (ready = resolve));
  const { child, exited, output } = spawnNatsServer(options.serverBinary ?? defaultServerBinary(), args, users, outputLinesMax, (line) => {
    options.onOutput?.(line);
    if (line.includes("Server is ready")) ready();
  });
  const server = new PrivateNatsServer(`${loopbackHost}:${port}`, users, child, exited, storeDirectory, output);
  const deadlineMs = options.startDeadlineMs ?? 20_000;
  let timer: ReturnType<typeof setTimeout> | undefined;
  const outcome = await Promise.race([
    readyLogged.then(() => "ready" as const),
    exited.then(() => "exited" as const),
    new Promise<"timeout">((resolve) => (timer = setTimeout(() => resolve("timeout"), deadlineMs))),
  ]);
  clearTimeout(timer);
  if (outcome !== "ready") {
    await server.stop();
    throw new PrivateNatsServerError(`nats-server ${outcome === "exited" ? "exited" : `was not ready within ${deadlineMs} ms`}:\n${output.slice(-20).join("\n")}`);
  }
  return server;
}
