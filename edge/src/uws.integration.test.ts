// The edge must run on uWebSockets.js's native binary, never on its JavaScript shim: the shim passes
// functional tests and then collapses under load.
import { spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdtemp, readdir, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { loadNativeUws } from "./uws.ts";

const repositoryDirectory = fileURLToPath(new URL("../../", import.meta.url));
const exitDeadlineMs = 30_000;

let temporaryDirectory: string;

beforeAll(async () => {
  temporaryDirectory = await mkdtemp(join(tmpdir(), "cellwire-uws-"));
});

afterAll(async () => {
  await rm(temporaryDirectory, { recursive: true, force: true });
});

type Exit = { readonly status: number | null; readonly signal: NodeJS.Signals | null; readonly stdout: string; readonly stderr: string };

/**
 * Runs the edge's main and waits for it to exit; kills it (and fails) past the deadline. The EDGE_*
 * variables of this process are left out, so only `environment` configures the edge.
 */
function runEdgeMain(environment: Record<string, string>): Promise<Exit> {
  const inherited = Object.fromEntries(Object.entries(process.env).filter(([name]) => !name.startsWith("EDGE_") && name !== "NODE_ENV"));
  const child = spawn(process.execPath, ["--import", "tsx", "edge/src/main.ts"], {
    cwd: repositoryDirectory,
    env: { ...inherited, ...environment },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let stdout = "";
  let stderr = "";
  child.stdout.on("data", (chunk: Buffer) => {
    stdout += chunk.toString();
  });
  child.stderr.on("data", (chunk: Buffer) => {
    stderr += chunk.toString();
  });
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill("SIGKILL");
      reject(new Error(`the edge did not exit within ${exitDeadlineMs} ms; stdout: ${stdout}; stderr: ${stderr}`));
    }, exitDeadlineMs);
    child.on("error", (error) => {
      clearTimeout(timer);
      reject(error);
    });
    child.on("exit", (status, signal) => {
      clearTimeout(timer);
      resolve({ status, signal, stdout, stderr });
    });
  });
}

describe("uWebSockets.js", () => {
  it("loads its native binary in this process", () => {
    const uws = loadNativeUws();
    // The shim lacks SSLApp; the native build has it, and its App makes a working app object.
    expect(typeof uws.SSLApp).toBe("function");
    expect(typeof uws.App().ws).toBe("function");
  });

  it("keeps the edge from starting on the JavaScript shim", async () => {
    const namespace = `tuws${Date.now().toString(36)}${randomBytes(3).toString("hex")}`.slice(0, 24);
    const devKeyDirectory = join(temporaryDirectory, "dev-keys");
    const exit = await runEdgeMain({
      UWS_USE_FALLBACK: "1",
      EDGE_AUTH_MODE: "dev",
      CELLWIRE_NAMESPACE: namespace,
      EDGE_PORT: "0",
      EDGE_DEV_KEY_DIR: devKeyDirectory,
    });
    expect(exit.signal).toBeNull();
    expect(exit.status).not.toBe(0);
    expect(exit.status).not.toBeNull();
    expect(exit.stdout).toMatch(/failed to start: .*fell back to its JavaScript shim/);
    // It refused before doing anything: no dev key pair was made.
    await expect(readdir(devKeyDirectory)).rejects.toMatchObject({ code: "ENOENT" });
  });
});

describe("an edge started without auth settings", () => {
  it("exits non-zero, saying what to set, instead of falling into dev mode", async () => {
    const namespace = `tuws${Date.now().toString(36)}${randomBytes(3).toString("hex")}`.slice(0, 24);
    const devKeyDirectory = join(temporaryDirectory, "no-settings-dev-keys");
    // EDGE_DEV_KEY_DIR would be reported unknown in jwks mode; it is here to prove no dev key is made.
    const exit = await runEdgeMain({ CELLWIRE_NAMESPACE: namespace, EDGE_PORT: "0", EDGE_DEV_KEY_DIR: devKeyDirectory });
    expect(exit.signal).toBeNull();
    expect(exit.status).not.toBe(0);
    expect(exit.status).not.toBeNull();
    expect(exit.stdout).toMatch(/failed to start: .*EDGE_AUTH_MODE is jwks unless set/);
    expect(exit.stdout).toContain("EDGE_JWKS_URL");
    await expect(readdir(devKeyDirectory)).rejects.toMatchObject({ code: "ENOENT" });
  });

  it("refuses dev mode under NODE_ENV=production", async () => {
    const namespace = `tuws${Date.now().toString(36)}${randomBytes(3).toString("hex")}`.slice(0, 24);
    const exit = await runEdgeMain({ CELLWIRE_NAMESPACE: namespace, EDGE_PORT: "0", EDGE_AUTH_MODE: "dev", NODE_ENV: "production" });
    expect(exit.status).not.toBe(0);
    expect(exit.status).not.toBeNull();
    expect(exit.stdout).toMatch(/failed to start: .*EDGE_AUTH_MODE=dev is refused with NODE_ENV=production/);
  });
});
