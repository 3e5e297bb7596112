// Before starting anything: is each service the topology needs reachable? A newcomer gets the name of
// the missing service and the command that starts it, not a stack trace from deep inside a driver.
import { connect } from "node:net";

export type ServiceCheck = { readonly name: string; readonly host: string; readonly port: number; readonly howToStart: string };

export function reachable(host: string, port: number, timeoutMs: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect({ host, port });
    const done = (ok: boolean): void => {
      socket.destroy();
      resolve(ok);
    };
    socket.setTimeout(timeoutMs, () => done(false));
    socket.once("connect", () => done(true));
    socket.once("error", () => done(false));
  });
}

function hostAndPort(url: string, defaultPort: number): { host: string; port: number } {
  const withScheme = url.includes("://") ? url : `nats://${url}`;
  const parsed = new URL(withScheme);
  return { host: parsed.hostname || "127.0.0.1", port: parsed.port === "" ? defaultPort : Number(parsed.port) };
}

export function servicesToCheck(natsServers: readonly string[], redisUrl: string, postgresAdminUrl: string): ServiceCheck[] {
  const nats = hostAndPort(natsServers[0] ?? "127.0.0.1:4222", 4222);
  const redis = hostAndPort(redisUrl, 6379);
  const postgres = hostAndPort(postgresAdminUrl, 5432);
  return [
    {
      name: "NATS (with JetStream)",
      ...nats,
      howToStart:
        "start-stop-daemon --start --oknodo --background --exec /usr/sbin/nats-server -- -a 127.0.0.1 -p 4222 -js -sd /var/lib/nats-server -l /var/log/nats-server.log",
    },
    {
      name: "Redis",
      ...redis,
      howToStart: 'redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no',
    },
    {
      name: "PostgreSQL",
      ...postgres,
      howToStart: "pg_ctlcluster --skip-systemctl-redirect 15 main start",
    },
  ];
}

/** Returns one message per unreachable service (empty when all answer). */
export async function unreachableServices(checks: readonly ServiceCheck[], timeoutMs = 1500): Promise<string[]> {
  const results = await Promise.all(checks.map(async (check) => ({ check, ok: await reachable(check.host, check.port, timeoutMs) })));
  return results
    .filter((result) => !result.ok)
    .map(({ check }) => `${check.name} is not reachable at ${check.host}:${check.port}. Start it locally with:\n    ${check.howToStart}`);
}
