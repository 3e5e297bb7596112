// Bootstrapping shared by `npm start` and `npm test`. Plain JavaScript on purpose: it runs before the
// dependencies (tsx among them) are installed, so it may use nothing but Node itself.
import { execFileSync, spawnSync } from "node:child_process";
import { existsSync, statSync } from "node:fs";
import { connect } from "node:net";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

export const root = join(dirname(fileURLToPath(import.meta.url)), "..");

export function say(message) {
  process.stdout.write(`[cellwire] ${message}\n`);
}

/** Runs `npm ci` when node_modules is missing or older than the lockfile. */
export function ensureDependencies() {
  const marker = join(root, "node_modules", ".package-lock.json");
  const lockfile = join(root, "package-lock.json");
  if (existsSync(marker) && statSync(marker).mtimeMs >= statSync(lockfile).mtimeMs) return;
  say("installing dependencies (npm ci)…");
  const result = spawnSync("npm", ["ci", "--no-audit", "--no-fund"], { cwd: root, stdio: "inherit" });
  if (result.status !== 0) throw new Error("npm ci failed");
}

function reachable(host, port, timeoutMs = 1000) {
  return new Promise((resolve) => {
    const socket = connect({ host, port });
    const done = (ok) => {
      socket.destroy();
      resolve(ok);
    };
    socket.setTimeout(timeoutMs, () => done(false));
    socket.once("connect", () => done(true));
    socket.once("error", () => done(false));
  });
}

async function waitReachable(host, port, deadlineMs) {
  const deadline = Date.now() + deadlineMs;
  while (Date.now() < deadline) {
    if (await reachable(host, port)) return true;
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
  return false;
}

/** The local services, with the commands this kind of machine starts them with. */
export const localServices = [
  {
    name: "PostgreSQL",
    port: 5432,
    start: ["bash", ["-c", "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql | head -n 1) main start"]],
  },
  {
    name: "Redis",
    port: 6379,
    start: [
      "bash",
      [
        "-c",
        'mkdir -p /var/lib/redis /var/log/redis && redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no --dir /var/lib/redis --logfile /var/log/redis/ci.log',
      ],
    ],
  },
  {
    name: "NATS",
    port: 4222,
    start: [
      "bash",
      [
        "-c",
        "mkdir -p /var/lib/nats-server && start-stop-daemon --start --oknodo --background --exec /usr/sbin/nats-server -- -a 127.0.0.1 -p 4222 -js -sd /var/lib/nats-server -l /var/log/nats-server.log",
      ],
    ],
  },
];

/**
 * Starts each local service that does not answer on its port. With `startMissing` false it only reports.
 * Returns the names of services still unreachable.
 */
export async function ensureServices({ startMissing }) {
  const missing = [];
  for (const service of localServices) {
    if (await reachable("127.0.0.1", service.port)) continue;
    if (!startMissing) {
      missing.push(service.name);
      continue;
    }
    say(`${service.name} is not running on 127.0.0.1:${service.port}; starting it…`);
    const [command, args] = service.start;
    spawnSync(command, args, { stdio: "inherit" });
    if (!(await waitReachable("127.0.0.1", service.port, 20_000))) missing.push(service.name);
  }
  return missing;
}

/** Installs Debian's chromium for the browser test when it is missing and we may (root with apt-get). */
export function ensureChromium() {
  if (existsSync("/usr/bin/chromium")) return true;
  const isRoot = typeof process.getuid === "function" && process.getuid() === 0;
  let hasApt = false;
  try {
    execFileSync("which", ["apt-get"], { stdio: "ignore" });
    hasApt = true;
  } catch {}
  if (!isRoot || !hasApt) {
    say("chromium is missing and cannot be installed here; install Debian's chromium package (apt-get install -y chromium)");
    return false;
  }
  say("installing Debian's chromium for the browser test…");
  const environment = { ...process.env, DEBIAN_FRONTEND: "noninteractive" };
  spawnSync("apt-get", ["update", "-qq"], { stdio: "inherit", env: environment });
  const result = spawnSync("apt-get", ["install", "-y", "-qq", "--no-install-recommends", "chromium"], {
    stdio: "inherit",
    env: environment,
  });
  return result.status === 0 && existsSync("/usr/bin/chromium");
}
