// `cellwire up` (npm start) runs the admin HTTP API too: its banner names the API's URL and the file of a
// token made for this run (readable by the user only); the commands reach the topology through it with
// that token; Ctrl-C's SIGTERM stops it and removes the token.
import { spawn, type ChildProcess } from "node:child_process";
import { readFile, stat } from "node:fs/promises";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, expect, it, onTestFailed } from "vitest";
import { Redis } from "ioredis";
import { dropCellDatabase } from "@cellwire/cells";
import { RedisDirectory } from "@cellwire/directory";
import { pollUntil } from "@cellwire/testkit";
import { runCli } from "../test/run-cli.ts";
import { testServices, uniqueNamespace } from "./test-topology.ts";

const cliPath = fileURLToPath(new URL("../bin/cellwire.js", import.meta.url));
const startDeadlineMs = 90_000;
const stopDeadlineMs = 30_000;
const namespace = uniqueNamespace("upadmin");
const output: string[] = [];
let launcher: ChildProcess | undefined;
let launcherExited: Promise<number | null> | undefined;

beforeAll(async () => {
  const environment: Record<string, string | undefined> = {
    ...process.env,
    CELLWIRE_NAMESPACE: namespace,
    CELLWIRE_EDGE_PORTS: "0,0",
    ADMIN_PORT: "0",
    DIRECTORY_REDIS_URL: testServices.redisUrl,
    WORKER_POSTGRES_ADMIN_URL: testServices.postgresAdminUrl,
  };
  delete environment["CELLWIRE_NATS_SERVERS"];
  delete environment["CELLWIRE_NATS_CLUSTER_NODES"];
  const child = spawn(process.execPath, [cliPath, "up"], { stdio: ["ignore", "pipe", "pipe"], env: environment });
  launcher = child;
  launcherExited = new Promise((resolve) => child.once("exit", (code) => resolve(code)));
  for (const stream of [child.stdout, child.stderr]) {
    let pending = "";
    stream.on("data", (chunk: Buffer) => {
      const lines = (pending + chunk.toString()).split("\n");
      pending = lines.pop() ?? "";
      output.push(...lines);
    });
  }
  await pollUntil(
    "cellwire up to print its banner",
    () => {
      if (output.includes("Ctrl-C stops everything.")) return true;
      if (child.exitCode !== null) throw new Error(`cellwire up exited with status ${child.exitCode}:\n${output.slice(-40).join("\n")}`);
      return undefined;
    },
    { deadlineMs: startDeadlineMs, intervalMs: 100, detail: () => output.slice(-40).join("\n") },
  );
}, startDeadlineMs + 10_000);

afterAll(async () => {
  if (launcher !== undefined && launcher.exitCode === null && launcher.signalCode === null) {
    launcher.kill("SIGTERM");
    const timer = setTimeout(() => launcher?.kill("SIGKILL"), stopDeadlineMs);
    await launcherExited;
    clearTimeout(timer);
  }
  for (const cellId of ["a", "b"]) await dropCellDatabase(testServices.postgresAdminUrl, namespace, cellId);
  const redis = new Redis(testServices.redisUrl, { lazyConnect: true, maxRetriesPerRequest: 1 });
  try {
    await redis.connect();
    await new RedisDirectory(redis, namespace).destroyNamespace();
  } finally {
    redis.disconnect();
  }
}, stopDeadlineMs + 20_000);

it("prints the admin API's URL and token file, serves the commands with that token, and removes the token at stop", async () => {
  onTestFailed(() => {
    process.stderr.write(`cellwire up output:\n${output.slice(-100).join("\n")}\n`);
  });
  expect(output.some((line) => line.startsWith("[cellwire-admin] "))).toBe(true);
  const exportLine = output
    .map((line) => /^ +export CELLWIRE_ADMIN_URL=(\S+) CELLWIRE_ADMIN_TOKEN=\$\(cat (\S+)\)$/.exec(line))
    .find((match) => match !== null);
  expect(exportLine, "the banner's admin API line").toBeDefined();
  const [, url, tokenFile] = exportLine ?? [];
  if (url === undefined || tokenFile === undefined) throw new Error("no admin API line");
  expect(url).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
  expect((await stat(tokenFile)).mode & 0o777).toBe(0o600);
  const token = (await readFile(tokenFile, "utf8")).trim();
  expect(token.length).toBeGreaterThanOrEqual(32);

  const cells = await runCli(["cells", "--json"], undefined, { CELLWIRE_ADMIN_URL: url, CELLWIRE_ADMIN_TOKEN: token }).done;
  expect(cells.status, cells.stderr).toBe(0);
  expect(JSON.parse(cells.stdout)).toMatchObject({ namespace, cells: [{ cellId: "a" }, { cellId: "b" }] });
  const refused = await fetch(`${url}/v1/cells`, { headers: { authorization: `Bearer ${"n".repeat(43)}` } });
  expect(refused.status).toBe(401);

  launcher?.kill("SIGTERM");
  expect(await launcherExited).toBe(0);
  await expect(stat(tokenFile)).rejects.toMatchObject({ code: "ENOENT" });
});
