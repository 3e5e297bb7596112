// A private redis-server for tests that must stop Redis (outage tests) without touching the machine's
// shared one: loopback only, on a free port, with an append-only file in a temporary directory so that
// stop() then start() on the same port keeps the data.
import { spawn, type ChildProcess } from "node:child_process";
import { mkdtemp, rm } from "node:fs/promises";
import { createServer, createConnection } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";

const host = "127.0.0.1";
const readyDeadlineMs = 10_000;
const stopDeadlineMs = 10_000;
const pingIntervalMs = 50;
const pingTimeoutMs = 500;
const outputLinesMax = 200;

export type PrivateRedis = {
  readonly port: number;
  readonly url: string;
  /** What redis-server printed (the last outputLinesMax lines), for a failing test's report. */
  readonly output: readonly string[];
  readonly running: boolean;
  /** Starts redis-server again on the same port, with the data of the append-only file; resolves once it answers PING. */
  start(): Promise<void>;
  /** SIGTERM, then waits for the exit (SIGKILL past stopDeadlineMs). The append-only file keeps the data. */
  stop(): Promise<void>;
  /** Kills the server and removes its directory. */
  destroy(): Promise<void>;
};

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once("error", reject);
    server.listen(0, host, () => {
      const address = server.address();
      const port = typeof address === "object" && address !== null ? address.port : 0;
      server.close(() => (port > 0 ? resolve(port) : reject(new Error("could not find a free port"))));
    });
  });
}

/** One PING over a raw connection: true when Redis answers +PONG within pingTimeoutMs. */
function ping(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = createConnection({ host, port });
    let answer = "";
    const finish = (ok: boolean): void => {
      clearTimeout(timer);
      socket.destroy();
      resolve(ok);
    };
    const timer = setTimeout(() => finish(false), pingTimeoutMs);
    socket.once("connect", () => socket.write("PING\r\n"));
    socket.on("data", (data) => {
      answer += data.toString();
      if (answer.includes("\r\n")) finish(answer.startsWith("+PONG"));
    });
    socket.once("error", () => finish(false));
  });
}

function exitOf(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => child.once("exit", () => resolve()));
}

export async function startPrivateRedis(): Promise<PrivateRedis> {
  const directory = await mkdtemp(join(tmpdir(), "cellwire-redis-"));
  const port = await freePort();
  const output: string[] = [];
  let child: ChildProcess | undefined;

  const running = (): boolean => child !== undefined && child.exitCode === null && child.signalCode === null;

  const start = async (): Promise<void> => {
    if (running()) throw new Error(`redis-server on port ${port} is already running`);
    const started = spawn(
      "redis-server",
      ["--bind", host, "--port", String(port), "--save", "", "--appendonly", "yes", "--dir", directory, "--protected-mode", "yes"],
      { stdio: ["ignore", "pipe", "pipe"] },
    );
    child = started;
    const keep = (data: Buffer): void => {
      for (const line of data.toString().split("\n")) if (line.trim() !== "") output.push(line);
      output.splice(0, Math.max(0, output.length - outputLinesMax));
    };
    started.stdout?.on("data", keep);
    started.stderr?.on("data", keep);
    let spawnError: Error | undefined;
    started.once("error", (error) => (spawnError = error));
    const deadline = performance.now() + readyDeadlineMs;
    while (performance.now() < deadline) {
      if (spawnError !== undefined) throw new Error(`could not run redis-server: ${spawnError.message}`);
      if (!running()) throw new Error(`redis-server on port ${port} exited at start:\n${output.slice(-20).join("\n")}`);
      if (await ping(port)) return;
      await new Promise((resolve) => setTimeout(resolve, pingIntervalMs));
    }
    started.kill("SIGKILL");
    throw new Error(`redis-server on port ${port} did not answer PING within ${readyDeadlineMs} ms:\n${output.slice(-20).join("\n")}`);
  };

  const stop = async (): Promise<void> => {
    const current = child;
    if (current === undefined || !running()) return;
    current.kill("SIGTERM");
    const killer = setTimeout(() => current.kill("SIGKILL"), stopDeadlineMs);
    await exitOf(current);
    clearTimeout(killer);
  };

  const destroy = async (): Promise<void> => {
    const current = child;
    if (current !== undefined && running()) {
      current.kill("SIGKILL");
      await exitOf(current);
    }
    await rm(directory, { recursive: true, force: true });
  };

  try {
    await start();
  } catch (error) {
    await destroy();
    throw error;
  }
  return {
    port,
    url: `redis://${host}:${port}`,
    output,
    get running() {
      return running();
    },
    start,
    stop,
    destroy,
  };
}
