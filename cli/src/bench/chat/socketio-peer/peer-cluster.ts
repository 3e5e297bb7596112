// Starts the chat benchmark's Socket.IO peer: `nodes` forked servers (server.ts), each on a free port,
// sharing their rooms through one Redis and one adapter key. Resolves once every node said ready; a node
// that cannot start stops the others, and the error names it and says why.
import { fork, type ChildProcess } from "node:child_process";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";

const serverEntry = fileURLToPath(new URL("./server.ts", import.meta.url));
const nodesMax = 16;
const defaultHost = "127.0.0.1";
const defaultStartDeadlineMs = 30_000;
/** Past this, stop() SIGKILLs a node that has not exited after its SIGTERM. */
const stopDeadlineMs = 10_000;
/** Lines of each node's output kept for the message of a failed start. */
const recentOutputLinesMax = 20;

export type SocketIoPeerOptions = {
  readonly nodes: number;
  readonly redisUrl: string;
  /** The redis adapter's `key`: unique per run, so that runs sharing a Redis never see each other's rooms. */
  readonly key: string;
  readonly host?: string;
  /** Receives each line a node prints, with its process name (socketio-peer-<n>). */
  readonly onOutput?: (processName: string, line: string) => void;
  readonly startDeadlineMs?: number;
};

export type SocketIoPeerProcess = { readonly processName: string; readonly pid: number };

export type SocketIoPeer = {
  /** `http://host:port` of each node, in node order. */
  readonly urls: readonly string[];
  readonly processes: readonly SocketIoPeerProcess[];
  /** SIGTERM to every node, SIGKILL past a deadline; resolves once all have exited. Safe to call twice. */
  stop(): Promise<void>;
};

export class SocketIoPeerStartError extends Error {
  override readonly name = "SocketIoPeerStartError";
}

type PeerNode = {
  readonly processName: string;
  readonly child: ChildProcess;
  readonly exited: Promise<void>;
  readonly recentOutput: string[];
};

function isRunning(child: ChildProcess): boolean {
  return child.exitCode === null && child.signalCode === null;
}

function forkNode(number: number, options: SocketIoPeerOptions, host: string): PeerNode {
  const processName = `socketio-peer-${number}`;
  // Settings come from the options alone: one inherited by accident would change what is measured.
  const inherited = Object.fromEntries(Object.entries(process.env).filter(([name]) => !name.startsWith("SOCKETIO_PEER_")));
  const child = fork(serverEntry, [], {
    execArgv: ["--import", "tsx"],
    env: {
      ...inherited,
      SOCKETIO_PEER_NODE: String(number),
      SOCKETIO_PEER_PORT: "0",
      SOCKETIO_PEER_HOST: host,
      SOCKETIO_PEER_REDIS_URL: options.redisUrl,
      SOCKETIO_PEER_KEY: options.key,
    },
    stdio: ["ignore", "pipe", "pipe", "ipc"],
  });
  const exited = new Promise<void>((resolve) => {
    child.once("exit", () => resolve());
    // A child that could not be spawned at all emits "error" and never "exit".
    child.on("error", () => {
      if (child.pid === undefined) resolve();
    });
  });
  const recentOutput: string[] = [];
  // The pipes are read even without onOutput: a node whose pipe filled up would block on its next write.
  for (const stream of [child.stdout, child.stderr]) {
    if (stream === null) continue;
    createInterface({ input: stream }).on("line", (line) => {
      recentOutput.push(line);
      if (recentOutput.length > recentOutputLinesMax) recentOutput.shift();
      options.onOutput?.(processName, line);
    });
  }
  return { processName, child, exited, recentOutput };
}

/** Resolves with the port the node reports once listening; rejects on "failed", an early exit or the deadline. */
function readyPort(node: PeerNode, deadlineMs: number): Promise<number> {
  const { processName, child } = node;
  return new Promise<number>((resolve, reject) => {
    const fail = (why: string): void => {
      clearTimeout(timer);
      reject(new SocketIoPeerStartError(`${processName} ${why}`));
    };
    const timer = setTimeout(() => fail(`was not ready within ${deadlineMs} ms`), deadlineMs);
    child.on("message", (message: unknown) => {
      if (typeof message !== "object" || message === null || !("type" in message)) return;
      if (message.type === "ready") {
        const port = "port" in message ? message.port : undefined;
        if (typeof port !== "number" || !Number.isInteger(port) || port < 1 || port > 65_535) {
          fail("reported ready without a port");
          return;
        }
        clearTimeout(timer);
        resolve(port);
      } else if (message.type === "failed") {
        const why = "message" in message && typeof message.message === "string" ? message.message : "no reason given";
        fail(`failed to start: ${why}`);
      }
    });
    child.on("error", (error) => fail(`could not be started: ${error.message}`));
    // After a ready, the promise is settled and this does nothing.
    void node.exited.then(() => fail(`exited (status ${String(child.exitCode ?? child.signalCode)}) before it was ready`));
  });
}

async function stopNodes(nodes: readonly PeerNode[]): Promise<void> {
  for (const { child } of nodes) if (isRunning(child)) child.kill("SIGTERM");
  const deadline = setTimeout(() => {
    for (const { child } of nodes) if (isRunning(child)) child.kill("SIGKILL");
  }, stopDeadlineMs);
  await Promise.all(nodes.map(({ exited }) => exited));
  clearTimeout(deadline);
}

function describeFailure(node: PeerNode, reason: unknown): string {
  const why = reason instanceof Error ? reason.message : String(reason);
  return node.recentOutput.length === 0 ? why : `${why}\n  last output of ${node.processName}:\n    ${node.recentOutput.join("\n    ")}`;
}

export async function startSocketIoPeer(options: SocketIoPeerOptions): Promise<SocketIoPeer> {
  if (!Number.isInteger(options.nodes) || options.nodes < 1 || options.nodes > nodesMax) {
    throw new RangeError(`nodes must be an integer from 1 to ${nodesMax}, not ${options.nodes}`);
  }
  const host = options.host ?? defaultHost;
  const startDeadlineMs = options.startDeadlineMs ?? defaultStartDeadlineMs;
  const nodes = Array.from({ length: options.nodes }, (_, index) => forkNode(index + 1, options, host));
  const outcomes = await Promise.all(
    nodes.map((node) =>
      readyPort(node, startDeadlineMs).then(
        (port) => ({ node, port, reason: undefined }),
        (reason: unknown) => ({ node, port: undefined, reason }),
      ),
    ),
  );
  const failed = outcomes.filter((outcome) => outcome.port === undefined);
  if (failed.length > 0) {
    await stopNodes(nodes);
    const failures = failed.map(({ node, reason }) => describeFailure(node, reason));
    throw new SocketIoPeerStartError(`the Socket.IO peer did not start:\n${failures.join("\n")}`, {
      cause: failed.map(({ reason }) => reason),
    });
  }

  // An IPv6 literal needs brackets in a URL.
  const urlHost = host.includes(":") ? `[${host}]` : host;
  const urls = outcomes.map(({ port }) => `http://${urlHost}:${String(port)}`);
  const processes: SocketIoPeerProcess[] = [];
  for (const { processName, child } of nodes) {
    if (child.pid === undefined) {
      await stopNodes(nodes);
      throw new SocketIoPeerStartError(`${processName} said ready but has no pid`);
    }
    processes.push({ processName, pid: child.pid });
  }
  let stopped: Promise<void> | undefined;
  return {
    urls,
    processes,
    stop: () => (stopped ??= stopNodes(nodes)),
  };
}
