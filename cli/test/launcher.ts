// `cellwire up` (npm start) as a user runs it, for the tests of the launcher itself: spawned with a fresh
// namespace on the machine's Redis and Postgres and its own NATS, its output collected line by line, ready
// once it prints its banner; stopped as Ctrl-C would, and its namespace's databases and keys removed.
import { spawn, type ChildProcess } from "node:child_process";
import { fileURLToPath } from "node:url";
import { Redis } from "ioredis";
import { dropCellDatabase } from "@cellwire/cells";
import { RedisDirectory } from "@cellwire/directory";
import { pollUntil } from "@cellwire/testkit";
import { testServices } from "../src/test-topology.ts";

const cliPath = fileURLToPath(new URL("../bin/cellwire.js", import.meta.url));
const bannerEnd = "Ctrl-C stops everything.";

export type RunningLauncher = {
  readonly child: ChildProcess;
  /** Every line it printed, stdout and stderr. */
  readonly output: string[];
  /** Its exit status once it exits. */
  readonly exited: Promise<number | null>;
};

/**
 * Spawns `cellwire up <args>` on `namespace` with the machine's Redis and Postgres, edges on free ports and
 * `extraEnvironment`, and resolves once its banner is out (rejects if it exits first or takes longer than
 * startDeadlineMs). It starts its own NATS: the caller's CELLWIRE_NATS_SERVERS and _CLUSTER_NODES are dropped.
 */
export async function startLauncher(
  args: readonly string[],
  namespace: string,
  startDeadlineMs: number,
  extraEnvironment: Readonly<Record<string, string>> = {},
): Promise<RunningLauncher> {
  const environment: Record<string, string | undefined> = {
    ...process.env,
    CELLWIRE_NAMESPACE: namespace,
    CELLWIRE_EDGE_PORTS: "0,0",
    DIRECTORY_REDIS_URL: testServices.redisUrl,
    WORKER_POSTGRES_ADMIN_URL: testServices.postgresAdminUrl,
    ...extraEnvironment,
  };
  delete environment["CELLWIRE_NATS_SERVERS"];
  delete environment["CELLWIRE_NATS_CLUSTER_NODES"];
  const child = spawn(process.execPath, [cliPath, "up", ...args], { stdio: ["ignore", "pipe", "pipe"], env: environment });
  const output: string[] = [];
  const exited = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)));
  for (const stream of [child.stdout, child.stderr]) {
    let pending = "";
    stream.on("data", (chunk: Buffer) => {
      const lines = (pending + chunk.toString()).split("\n");
      pending = lines.pop() ?? "";
      output.push(...lines);
    });
  }
  const launcher = { child, output, exited };
  await pollUntil(
    "cellwire up to print its banner",
    () => {
      if (output.includes(bannerEnd)) return true;
      if (child.exitCode !== null) throw new Error(`cellwire up exited with status ${child.exitCode}:\n${output.slice(-40).join("\n")}`);
      return undefined;
    },
    { deadlineMs: startDeadlineMs, intervalMs: 100, detail: () => output.slice(-40).join("\n") },
  );
  return launcher;
}

/** SIGTERM, as Ctrl-C sends; SIGKILL past stopDeadlineMs. Resolves with its exit status (at once if it exited). */
export async function stopLauncher(launcher: RunningLauncher | undefined, stopDeadlineMs: number): Promise<number | null | undefined> {
  if (launcher === undefined) return undefined;
  const { child } = launcher;
  if (child.exitCode === null && child.signalCode === null) {
    child.kill("SIGTERM");
    const timer = setTimeout(() => child.kill("SIGKILL"), stopDeadlineMs);
    await launcher.exited;
    clearTimeout(timer);
  }
  return launcher.exited;
}

/** Removes what the launcher's namespace left on the shared services: the cells' databases and the directory's keys. */
export async function removeLauncherNamespace(namespace: string, cellIds: readonly string[] = ["a", "b"]): Promise<void> {
  for (const cellId of cellIds) await dropCellDatabase(testServices.postgresAdminUrl, namespace, cellId);
  const redis = new Redis(testServices.redisUrl, { lazyConnect: true, maxRetriesPerRequest: 1 });
  try {
    await redis.connect();
    await new RedisDirectory(redis, namespace).destroyNamespace();
  } finally {
    redis.disconnect();
  }
}
