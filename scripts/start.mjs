// `npm start`: install what is missing, then run the local topology (`cellwire up`). Arguments after
// `--` go to `cellwire up` (`npm start -- --nats-cluster`).
import { spawn } from "node:child_process";
import { join } from "node:path";
import { ensureDependencies, root, say } from "./setup.mjs";

ensureDependencies();
const child = spawn(process.execPath, [join(root, "cli", "bin", "cellwire.js"), "up", ...process.argv.slice(2)], {
  cwd: root,
  stdio: "inherit",
});
// Ctrl-C reaches the child through the terminal's process group; SIGTERM sent to us alone is passed on.
process.on("SIGTERM", () => child.kill("SIGTERM"));
process.on("SIGINT", () => {});
child.on("exit", (code, signal) => {
  if (signal !== null) say(`stopped by ${signal}`);
  process.exit(code ?? 1);
});
