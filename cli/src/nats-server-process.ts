// Starting nats-server processes on loopback: free ports, the binary, and one server from the shipped
// configuration with its users' passwords. The private server of `npm start` and of each test topology
// (private-nats-server.ts) uses it, and so does the NATS cluster (nats-cluster.ts) of `cellwire up --nats-cluster` and of the tests.
import { spawn, type ChildProcess } from "node:child_process";
import { accessSync, constants, existsSync, statSync } from "node:fs";
import { createServer, type Server } from "node:net";
import { delimiter, join } from "node:path";
import { createInterface } from "node:readline";
import type { NatsUsers } from "./nats-users.ts";

const loopbackHost = "127.0.0.1";

export class FreePortError extends Error {
  override readonly name = "FreePortError";
}

/** Binds `count` listeners on port 0 at once (so the ports differ), notes their ports and closes them. */
export async function freeLoopbackPorts(count: number): Promise<number[]> {
  const servers: Server[] = [];
  try {
    const ports: number[] = [];
    for (let index = 0; index < count; index++) {
      const server = createServer();
      servers.push(server);
      await new Promise<void>((resolve, reject) => {
        server.once("error", reject);
        server.listen(0, loopbackHost, () => resolve());
      });
      const address = server.address();
      if (address === null || typeof address === "string") throw new FreePortError("a listener on port 0 reported no port");
      ports.push(address.port);
    }
    return ports;
  } finally {
    await Promise.all(servers.map((server) => new Promise<void>((resolve) => server.close(() => resolve()))));
  }
}

/**
 * A nats-server started from the shipped configuration with the users' passwords in its environment (never
 * its arguments). Both pipes are always read, since a server whose log pipe fills up would block; the last
 * `outputLinesMax` lines are kept for error messages. `exited` also settles when the binary cannot start
 * at all (then 'error' comes and never 'exit').
 */
export function spawnNatsServer(
  binary: string,
  args: readonly string[],
  users: NatsUsers,
  outputLinesMax: number,
  onLine?: (line: string) => void,
): { child: ChildProcess; exited: Promise<void>; output: string[] } {
  const child = spawn(binary, args, { stdio: ["ignore", "pipe", "pipe"], env: { ...process.env, ...users.serverEnvironment() } });
  const output: string[] = [];
  const exited = new Promise<void>((resolve) => {
    child.once("exit", () => resolve());
    child.once("error", (error) => {
      output.push(`cannot run nats-server: ${error.message}`);
      resolve();
    });
  });
  for (const stream of [child.stdout, child.stderr]) {
    createInterface({ input: stream }).on("line", (line) => {
      output.push(line);
      if (output.length > outputLinesMax) output.shift();
      onLine?.(line);
    });
  }
  return { child, exited, output };
}

/** Debian's package installs it outside a non-root PATH; scripts/setup.mjs starts the same binary. */
export const debianServerBinary = "/usr/sbin/nats-server";

export function defaultServerBinary(): string {
  return existsSync(debianServerBinary) ? debianServerBinary : "nats-server";
}

/**
 * Where the nats-server executable is (Debian's path, else the first on `pathVariable`, as a shell looks
 * it up), or undefined when it is not installed: `cellwire up` says so before starting anything, rather
 * than a spawn failing with ENOENT inside a node's log.
 */
export function locateNatsServer(pathVariable: string | undefined, isExecutable: (path: string) => boolean): string | undefined {
  const candidates = [debianServerBinary, ...(pathVariable ?? "").split(delimiter).filter((directory) => directory !== "")];
  return candidates
    .map((candidate) => (candidate === debianServerBinary ? candidate : join(candidate, "nats-server")))
    .find((candidate) => isExecutable(candidate));
}

/** Whether `path` is a file this process may execute. */
export function isExecutableFile(path: string): boolean {
  try {
    accessSync(path, constants.X_OK);
    return statSync(path).isFile();
  } catch {
    return false;
  }
}
