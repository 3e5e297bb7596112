// Runs the `cellwire` command line as a child process, as a user would, for the integration tests.
import { spawn } from "node:child_process";
import { fileURLToPath } from "node:url";

const cliPath = fileURLToPath(new URL("../bin/cellwire.js", import.meta.url));

export type CliRun = { readonly done: Promise<{ status: number | null; stdout: string; stderr: string }> };

/** `onStderr` sees the whole stderr so far after each chunk (progress lines, a listener's readiness). */
export function runCli(
  args: readonly string[],
  onStderr?: (text: string) => void,
  environment: Readonly<Record<string, string>> = {},
): CliRun {
  const child = spawn(process.execPath, [cliPath, ...args], { stdio: ["ignore", "pipe", "pipe"], env: { ...process.env, ...environment } });
  let stdout = "";
  let stderr = "";
  child.stdout.on("data", (chunk: Buffer) => {
    stdout += chunk.toString();
  });
  child.stderr.on("data", (chunk: Buffer) => {
    stderr += chunk.toString();
    onStderr?.(stderr);
  });
  return { done: new Promise((resolve) => child.on("exit", (status) => resolve({ status, stdout, stderr }))) };
}
