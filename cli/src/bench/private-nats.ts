// A private nats-server with JetStream and its monitoring port, for the per-message budget of the chat
// benchmark (docs/performance.md): the machine's NATS stays as it was found and carries no monitoring.
//
//   npx tsx cli/src/bench/private-nats.ts [--port 4333] [--monitor-port 8333]   # runs until Ctrl-C, then removes it
//   npm run bench:chat -- … --nats-servers 127.0.0.1:4333 --nats-monitor-url http://127.0.0.1:8333
import { spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";

const { values } = parseArgs({
  options: { port: { type: "string", default: "4333" }, "monitor-port": { type: "string", default: "8333" } },
});
const port = Number(values.port);
const monitorPort = Number(values["monitor-port"]);
if (![port, monitorPort].every((value) => Number.isInteger(value) && value > 0 && value < 65536))
  throw new Error("--port and --monitor-port take port numbers");

const directory = mkdtempSync(join(tmpdir(), "cellwire-nats-"));
const server = spawn("nats-server", ["-a", "127.0.0.1", "-p", String(port), "-m", String(monitorPort), "-js", "-sd", directory], {
  stdio: "inherit",
});
process.stdout.write(
  `private nats-server at 127.0.0.1:${port}, monitoring at http://127.0.0.1:${monitorPort} (JetStream in ${directory}); Ctrl-C stops and removes it\n`,
);
const stop = (): void => {
  server.kill("SIGTERM");
};
process.on("SIGINT", stop);
process.on("SIGTERM", stop);
await new Promise<void>((resolve) => server.once("exit", () => resolve()));
rmSync(directory, { recursive: true, force: true });
process.stdout.write("stopped and removed\n");
