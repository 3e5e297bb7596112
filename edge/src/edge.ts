// Starts an edge from its config: NATS, the directory client and cache, the cell router, the delivery
// hub, the token verifier and the uWS server.
import { CellRouter, connectNats, DirectoryClient, systemClock, type ServiceLogger } from "@cellwire/cluster";
import { createTokenVerifier } from "./auth/token-verifier.ts";
import { signDevToken } from "./auth/dev-keys.ts";
import type { EdgeConfig } from "./config.ts";
import { DirectoryCache } from "./directory-cache.ts";
import { EdgeCore } from "./edge-core.ts";
import { NatsDeliveryHub } from "./delivery-hub.ts";
import { RequestHandler } from "./request-handler.ts";
import { startServer } from "./edge-server.ts";
import { loadNativeUws } from "./uws.ts";

export type RunningEdge = { readonly port: number; stop(): Promise<void> };

export async function startEdge(config: EdgeConfig, logger: ServiceLogger): Promise<RunningEdge> {
  const uws = loadNativeUws();
  const verifier = await createTokenVerifier(config.auth);
  const connection = await connectNats(config.natsServers, `cellwire-edge-${config.edgeId}`, logger);
  const directory = new DirectoryClient(connection, config.namespace, config.directoryTimeoutMs);
  const cache = new DirectoryCache(config.directoryCacheEntriesMax, config.directoryCacheTtlMs, () => systemClock.monotonicNowMs());
  const router = new CellRouter(
    connection,
    {
      namespace: config.namespace,
      leaseMs: config.leaseMs,
      requestTimeoutMs: config.cellRequestTimeoutMs,
      attemptsMax: config.cellRequestAttemptsMax,
      deadlineMs: config.cellRequestDeadlineMs,
      retryBackoff: { initialDelayMs: 25, maxDelayMs: 500, multiplier: 2 },
      watchedCellsMax: 1000,
    },
    systemClock,
    logger,
  );
  const hub = new NatsDeliveryHub(connection, config.namespace, logger.warn);
  const core = new EdgeCore(
    {
      authTimeoutMs: config.authTimeoutMs,
      heartbeatIntervalMs: config.heartbeatIntervalMs,
      sessionsMax: config.sessionsMax,
      sessionsPerUserMax: config.sessionsPerUserMax,
      requestsInFlightPerSessionMax: config.requestsInFlightPerSessionMax,
      sendBufferBytesMax: config.sendBufferBytesMax,
      heldEventsPerSessionMax: config.heldEventsPerSessionMax,
    },
    verifier,
    new RequestHandler(directory, cache, router),
    hub,
    logger,
  );
  router.onRingChange((cellId) => core.cellMembershipChanged(cellId));
  const devKeyDirectory = config.auth.mode === "dev" ? config.auth.devKeyDirectory : undefined;
  let stopping = false;
  const server = await startServer(
    uws,
    core,
    {
      host: config.host,
      port: config.port,
      idleTimeoutMs: config.idleTimeoutMs,
      sendBufferBytesMax: config.sendBufferBytesMax,
      isReady: () => !stopping && !connection.isClosed(),
    },
    {
      signToken: devKeyDirectory === undefined ? undefined : (userId, deviceId) => signDevToken(devKeyDirectory, userId, deviceId === undefined ? {} : { deviceId }),
      webDirectory: config.auth.mode === "dev" ? config.webDirectory : undefined,
    },
  );
  logger.info(`listening on ws://${config.host}:${server.port}/ws (auth: ${config.auth.mode})`);
  return {
    port: server.port,
    stop: async () => {
      stopping = true;
      server.stopListening();
      core.closeAll();
      router.stop();
      await connection.drain();
    },
  };
}
