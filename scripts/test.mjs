// `npm test`: install what is missing (dependencies, local services, Debian's chromium), typecheck, lint
// (eslint.config.js), check the format (prettier), then run the unit tests and the integration tests, and
// print one summary line. A failing step does not stop the later ones: one run reports every failure.
import { spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ensureChromium, ensureDependencies, ensureServices, root, say } from "./setup.mjs";

ensureDependencies();
const missing = await ensureServices({ startMissing: true });
if (missing.length > 0) {
  say(`cannot run the tests: ${missing.join(", ")} could not be started`);
  process.exit(1);
}
if (!ensureChromium()) {
  say("cannot run the browser test without /usr/bin/chromium");
  process.exit(1);
}

function run(label, command, args) {
  say(`${label}…`);
  const startedAt = Date.now();
  const result = spawnSync(command, args, { cwd: root, stdio: "inherit" });
  say(`${label}: ${result.status === 0 ? "ok" : "FAILED"} in ${((Date.now() - startedAt) / 1000).toFixed(1)} s`);
  return result.status === 0;
}

const reports = mkdtempSync(join(tmpdir(), "cellwire-test-"));
const totals = { passed: 0, failed: 0, skipped: 0 };
function count(file) {
  try {
    const report = JSON.parse(readFileSync(file, "utf8"));
    totals.passed += report.numPassedTests ?? 0;
    totals.failed += report.numFailedTests ?? 0;
    totals.skipped += (report.numPendingTests ?? 0) + (report.numTodoTests ?? 0);
  } catch {
    totals.failed += 1;
  }
}

const vitest = join(root, "node_modules", "vitest", "vitest.mjs");
let ok = run("typecheck (tsc)", process.execPath, [
  join(root, "node_modules", "typescript", "bin", "tsc"),
  "-p",
  "tsconfig.json",
  "--noEmit",
]);
ok = run("lint (eslint)", process.execPath, [join(root, "node_modules", "eslint", "bin", "eslint.js"), "."]) && ok;
ok =
  run("format (prettier --check)", process.execPath, [join(root, "node_modules", "prettier", "bin", "prettier.cjs"), "--check", "."]) && ok;
for (const project of ["unit", "integration"]) {
  const outputFile = join(reports, `${project}.json`);
  ok =
    run(`${project} tests`, process.execPath, [
      vitest,
      "run",
      "--project",
      project,
      "--reporter=default",
      "--reporter=json",
      `--outputFile.json=${outputFile}`,
    ]) && ok;
  count(outputFile);
}
process.stdout.write(`\ntests: ${totals.passed} passed, ${totals.failed} failed, ${totals.skipped} skipped\n`);
process.exit(ok && totals.failed === 0 && totals.passed > 0 ? 0 : 1);
