// uSockets (under uWebSockets.js) listens with a fixed backlog of 512 connections and offers no option
// for it. When an edge dies, its clients fail over to the others together (the SDK waits 0-250 ms):
// thousands of SYNs within a fraction of a second. Whenever the surviving edge's event loop is busy for
// longer than 512 of them take to arrive (13 ms at 40,000/s), the kernel drops the rest, and each dropped
// client waits for its SYN to be sent again: 1 s, then 3 s, then 7 s later. Measured with bench:connections
// (10,000 SDK clients failing over from a killed edge): 16,000-26,000 listen overflows per kill, and the
// clients dropped three times hit the SDK's 10 s connect timeout.
//
// Linux lets a process call listen() again on a listening socket to change its backlog, and any process
// holding the socket may do it. Node offers listen() only on a socket it owns a handle for, and closing that
// handle would close the socket; so a short-lived child process inherits a copy of the listening socket's
// descriptor, calls listen() on it with the larger backlog, and exits before its event loop could accept a
// connection (Node emits 'listening' on the next tick). The kernel caps the backlog at net.core.somaxconn
// (4,096 by default since Linux 5.4).
//
// Linux only (the edge runs there, decision 0002); elsewhere, and if any step fails, the socket keeps
// uSockets' 512 and the caller reports why.
import { spawn } from "node:child_process";
import { readdir, readFile, readlink } from "node:fs/promises";

/** What the edge asks for; the kernel gives min(this, net.core.somaxconn). */
export const listenBacklogRequested = 65_535;
const childDeadlineMs = 10_000;

/**
 * The inodes of the sockets listening on `port`, from the text of /proc/net/tcp or /proc/net/tcp6: rows of
 * `sl local_address rem_address st … inode`, addresses as hex `ADDRESS:PORT`, state 0A meaning LISTEN.
 */
export function listeningSocketInodes(procNetTcp: string, port: number): string[] {
  const inodes: string[] = [];
  for (const line of procNetTcp.split("\n").slice(1)) {
    const fields = line.trim().split(/\s+/);
    const localAddress = fields[1];
    const state = fields[3];
    const inode = fields[9];
    if (localAddress === undefined || state !== "0A" || inode === undefined) continue;
    const localPort = Number.parseInt(localAddress.slice(localAddress.lastIndexOf(":") + 1), 16);
    if (localPort === port && /^\d+$/.test(inode) && inode !== "0") inodes.push(inode);
  }
  return inodes;
}

/** This process's descriptor of a socket with one of `inodes` (its /proc/self/fd link reads socket:[inode]). */
async function descriptorOf(inodes: readonly string[]): Promise<number | undefined> {
  const wanted = new Set(inodes.map((inode) => `socket:[${inode}]`));
  for (const name of await readdir("/proc/self/fd")) {
    const target = await readlink(`/proc/self/fd/${name}`).catch(() => undefined);
    if (target !== undefined && wanted.has(target)) return Number(name);
  }
  return undefined;
}

/**
 * Runs in the child: listen() again on the inherited descriptor 3, then exit at once. The backlog is the
 * positional argument: Node's listen({ fd }) ignores a backlog given in the options object.
 */
const childScript = `
const server = require("node:net").createServer();
server.on("error", (error) => { process.stderr.write(String(error.message)); process.exit(1); });
server.listen({ fd: 3 }, Number(process.argv[1]), () => process.exit(0));
`;

function listenAgain(descriptor: number, backlog: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ["-e", childScript, String(backlog)], {
      stdio: ["ignore", "ignore", "pipe", descriptor],
      env: {},
    });
    let stderr = "";
    child.stderr?.setEncoding("utf8").on("data", (chunk: string) => (stderr += chunk.slice(0, 500)));
    const timer = setTimeout(() => child.kill("SIGKILL"), childDeadlineMs);
    child.once("error", (error) => {
      clearTimeout(timer);
      reject(error);
    });
    child.once("exit", (code, signal) => {
      clearTimeout(timer);
      if (code === 0) resolve();
      else reject(new Error(`the listen() helper exited with ${signal ?? `status ${String(code)}`}${stderr === "" ? "" : `: ${stderr}`}`));
    });
  });
}

export type BacklogOutcome = { readonly raised: true } | { readonly raised: false; readonly reason: string };

/** Raises the backlog of this process's socket listening on `port` (see the header). Never throws. */
export async function raiseListenBacklog(port: number, backlog = listenBacklogRequested): Promise<BacklogOutcome> {
  if (process.platform !== "linux") return { raised: false, reason: `not on Linux (${process.platform})` };
  try {
    const tables = await Promise.all(["/proc/net/tcp", "/proc/net/tcp6"].map((path) => readFile(path, "utf8").catch(() => "")));
    const inodes = tables.flatMap((table) => listeningSocketInodes(table, port));
    const descriptor = await descriptorOf(inodes);
    if (descriptor === undefined) return { raised: false, reason: `no listening socket of this process found on port ${port}` };
    await listenAgain(descriptor, backlog);
    return { raised: true };
  } catch (error) {
    return { raised: false, reason: error instanceof Error ? error.message : String(error) };
  }
}
