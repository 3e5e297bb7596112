// What every Cellwire process does alike: connecting to NATS, telling a parent launcher it is ready, and
// stopping cleanly on SIGTERM or SIGINT. Its log is service-logger.ts.
import { connect, PermissionViolationError, type NatsConnection } from "@nats-io/transport-node";
import { natsConnectOptions, type NatsAccess } from "./nats-access.ts";
import { Counter, type Registry } from "prom-client";
import type { ServiceLogger } from "./service-logger.ts";
import { metricPrefix, type ServiceMetrics } from "./service-metrics.ts";

/** Messages a service sends to the launcher that forked it (over the IPC channel, when there is one). */
export type LauncherMessage =
  | {
      readonly type: "ready";
      readonly processName: string;
      readonly port?: number;
      /** The admin listener's port (/metrics, /livez, /readyz) of a worker or the directory. */
      readonly adminPort?: number;
    }
  | { readonly type: "failed"; readonly processName: string; readonly message: string };

export function tellLauncher(message: LauncherMessage): void {
  if (typeof process.send === "function") process.send(message);
}

/**
 * Connects as the service `access` names: its user, its TLS settings, its own inbox prefix. With `metrics`,
 * counts the connection's losses and recoveries (cellwire_nats_disconnects_total, _reconnects_total): a
 * reconnect takes milliseconds, too short for a 0/1 gauge to be seen by a scrape, and a counter keeps it.
 */
export async function connectNats(
  servers: string[],
  name: string,
  logger: ServiceLogger,
  access: NatsAccess,
  metrics?: ServiceMetrics,
): Promise<NatsConnection> {
  const connection = await connect({
    ...(await natsConnectOptions(access)),
    servers,
    name,
    maxReconnectAttempts: -1,
    reconnectTimeWait: 250,
    pingInterval: 10_000,
    // nats.js otherwise builds an Error (a stack capture) for every subscribe and request, to report
    // where it was made: measurable CPU on an edge subscribing per user (docs/performance.md).
    noAsyncTraces: true,
  });
  const changes = metrics === undefined ? undefined : registerNatsConnectionMetrics(metrics.registry);
  void (async () => {
    for await (const status of connection.status()) {
      if (status.type === "disconnect" || status.type === "reconnect") changes?.[status.type].inc();
      if (status.type === "error") {
        // A permissions violation names the subject the server refused (docs/decisions/0015): a grant
        // missing from config/nats/cellwire.conf, or a service doing what its user may not.
        logger.warn(`nats error: ${status.error instanceof PermissionViolationError ? status.error.message : status.error.name}`);
      } else if (status.type === "disconnect" || status.type === "reconnect") {
        logger.warn(`nats ${status.type}`);
      }
    }
  })();
  return connection;
}

/** The counters connectNats keeps of its connection's losses and recoveries. */
export function registerNatsConnectionMetrics(registry: Registry): Readonly<Record<"disconnect" | "reconnect", Counter>> {
  return {
    disconnect: new Counter({
      name: `${metricPrefix}nats_disconnects_total`,
      help: "Times the process's NATS connection was lost.",
      registers: [registry],
    }),
    reconnect: new Counter({
      name: `${metricPrefix}nats_reconnects_total`,
      help: "Times the process's NATS connection was made again (to the same server or another one).",
      registers: [registry],
    }),
  };
}

/**
 * Runs `stop` once on SIGTERM or SIGINT, then exits; a second signal, or `stop` overrunning
 * shutdownDeadlineMs, exits at once with status 1.
 */
export function onShutdown(stop: () => Promise<void>, logger: ServiceLogger, shutdownDeadlineMs = 10_000): void {
  let stopping = false;
  const handler = (signal: NodeJS.Signals): void => {
    if (stopping) {
      process.exit(1);
    }
    stopping = true;
    logger.info(`${signal}: stopping`);
    const deadline = setTimeout(() => {
      logger.error(`did not stop within ${shutdownDeadlineMs} ms`);
      process.exit(1);
    }, shutdownDeadlineMs);
    deadline.unref();
    stop().then(
      () => process.exit(0),
      (error: unknown) => {
        logger.error(`stop failed: ${String(error)}`);
        process.exit(1);
      },
    );
  };
  process.on("SIGTERM", handler);
  process.on("SIGINT", handler);
  // A launcher that dies must not leave its children serving: when the IPC channel closes, stop.
  process.on("disconnect", () => handler("SIGTERM"));
}

/** Reports a failed start to the launcher and exits non-zero; for use in each main's catch. */
export function failStart(processName: string, logger: ServiceLogger, error: unknown): never {
  const message = error instanceof Error ? error.message : String(error);
  logger.error(`failed to start: ${message}`);
  tellLauncher({ type: "failed", processName, message });
  process.exit(1);
}
