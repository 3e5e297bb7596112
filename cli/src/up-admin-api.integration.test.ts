// `cellwire up` (npm start) runs the admin HTTP API too: its banner names the API's URL and the file of a
// token made for this run (readable by the user only); the commands reach the topology through it with
// that token; Ctrl-C's SIGTERM stops it and removes the token.
import { readFile, stat } from "node:fs/promises";
import { afterAll, beforeAll, expect, it, onTestFailed } from "vitest";
import { removeLauncherNamespace, startLauncher, stopLauncher, type RunningLauncher } from "../test/launcher.ts";
import { runCli } from "../test/run-cli.ts";
import { uniqueNamespace } from "./test-topology.ts";

const startDeadlineMs = 90_000;
const stopDeadlineMs = 30_000;
const namespace = uniqueNamespace("upadmin");
let launcher: RunningLauncher | undefined;

function running(): RunningLauncher {
  if (launcher === undefined) throw new Error("cellwire up did not start");
  return launcher;
}

beforeAll(async () => {
  launcher = await startLauncher([], namespace, startDeadlineMs, { ADMIN_PORT: "0" });
}, startDeadlineMs + 10_000);

afterAll(async () => {
  await stopLauncher(launcher, stopDeadlineMs);
  await removeLauncherNamespace(namespace);
}, stopDeadlineMs + 20_000);

it("prints the admin API's URL and token file, serves the commands with that token, and removes the token at stop", async () => {
  const { output } = running();
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
  // The launcher's admin API is probed like its other processes: ready without a token, metrics with it.
  expect((await fetch(`${url}/readyz`)).status).toBe(200);
  const metrics = await fetch(`${url}/metrics`, { headers: { authorization: `Bearer ${token}` } });
  expect([metrics.status, (await metrics.text()).includes('cellwire_admin_requests_total{operation="cells",outcome="ok"')]).toEqual([
    200,
    true,
  ]);

  running().child.kill("SIGTERM");
  expect(await running().exited).toBe(0);
  await expect(stat(tokenFile)).rejects.toMatchObject({ code: "ENOENT" });
});
