// Starts an edge from its config: NATS, the directory client and cache, the cell router, the delivery
// hub, typing and presence, the token verifier and the uWS server. startEdge is the composition root;
// each part is built by a named function below it.
import { randomBytes } from "node:crypto";
import type { NatsConnection, Subscription } from "@nats-io/transport-node";
import {
  ConcurrencyLimiter,
  anonymousNatsAccess,
  connectNats,
  decodeMessage,
  CellwireError,
  DirectoryClient,
  directoryHomes,
  readinessReport,
  routerDefaults,
  startRouter,
  subscribeDirectoryChanges,
  systemClock,
  watchNatsConnected,
  type NatsConnectedState,
  type ReadinessReport,
  type RunningRouter,
  type ServiceLogger,
  sleep,
} from "@cellwire/cluster";
import { revocationsSubject, sessionRevoke, type CellReply, type CellRequest } from "@cellwire/protocol";
import { Admission } from "./admission.ts";
import { RevocationList } from "./auth/revocation-list.ts";
import { createTokenVerifier } from "./auth/token-verifier.ts";
import { signDevToken } from "./auth/dev-keys.ts";
import type { EdgeConfig } from "./config.ts";
import { createEdgeDirectoryCache } from "./directory-cache.ts";
import { CatchUpPacer } from "./catch-up-pacer.ts";
import { EdgeCore, type EdgeLimits, type Session } from "./edge-core.ts";
import { DirectoryProbe, edgeReadinessChecks } from "./edge-health.ts";
import { EdgeMetrics } from "./edge-metrics.ts";
import { NatsDeliveryHub } from "./delivery-hub.ts";
import { RequestHandler } from "./request-handler.ts";
import { startServer, type RunningServer } from "./edge-server.ts";
import { loadNativeUws } from "./uws.ts";
import { EveryoneVisible, SharedConversationAccess, type PresenceAccess } from "./presence/presence-access.ts";
import { NatsPresenceHub } from "./presence/presence-hub.ts";
import { ConversationMembers } from "./typing/conversation-members.ts";
import { TypingRelay } from "./typing/typing-relay.ts";

/** How often the edge closes the sessions whose token expired: expiry is enforced up to this late. */
const tokenExpirySweepIntervalMs = 1000;

export type RunningEdge = { readonly port: number; stop(): Promise<void> };

export async function startEdge(config: EdgeConfig, logger: ServiceLogger): Promise<RunningEdge> {
  const uws = loadNativeUws();
  const metrics = new EdgeMetrics(`cellwire-edge-${config.edgeId}`);
  const verifier = await createTokenVerifier(config.auth, {
    clockToleranceMs: config.clockToleranceMs,
    wallNowMs: () => systemClock.wallNowMs(),
  });
  const connection = await connectNats(
    config.natsServers,
    `cellwire-edge-${config.edgeId}`,
    logger,
    config.natsAccess ?? anonymousNatsAccess("edge"),
    metrics.service,
  );
  const directory = new DirectoryClient(connection, config.namespace, config.directoryTimeoutMs);
  const router = startEdgeRouter(connection, config, directory, logger);
  const hub = new NatsDeliveryHub(connection, config.namespace, logger.warn);
  // Every delivery of the deployment reaches this edge from here on (docs/decisions/0011).
  await hub.start();
  const handler = buildRequestHandler(config, directory, router, metrics);
  const presence = await startPresence(connection, config, logger);
  const catchUps = new CatchUpPacer<Session>(
    { spreadMs: config.catchUpSpreadMs, readsInFlightMax: config.catchUpReadsInFlightMax },
    systemSchedule,
    (message) => logger.warn(message),
  );
  const core = new EdgeCore(
    edgeLimits(config),
    verifier,
    handler,
    hub,
    logger,
    {
      typing: new TypingRelay(buildConversationMembers(config, handler), hub, config.typingExpiresInMs),
      presence,
      presenceAccess: buildPresenceAccess(config, directory, handler, logger),
      monotonicNowMs: () => systemClock.monotonicNowMs(),
    },
    new ConcurrencyLimiter(config.conversationReadsInFlightMax),
    {
      wallNowMs: () => systemClock.wallNowMs(),
      revocations: new RevocationList({ revocationsMax: config.revocationsMax, retentionMs: config.revocationRetentionMs }),
    },
    catchUps,
    metrics,
  );
  const expirySweep = setInterval(() => core.closeExpiredSessions(), tokenExpirySweepIntervalMs);
  expirySweep.unref();
  const nats = watchNatsConnected(connection);
  const subscriptions = followChanges(connection, config, core, router, logger);
  let stopping = false;
  const readiness = watchHealth(metrics, core, nats, directory, () => stopping);
  const server = await startEdgeServer(uws, core, config, readiness, metrics);
  logger.info(`listening on ws://${config.host}:${server.port}/ws (auth: ${config.auth.mode})`);
  return {
    port: server.port,
    stop: async () => {
      stopping = true;
      // New connections are refused by the kernel from here on, so clients go to another edge at once.
      server.stopListening();
      await drainSessions(core, config, logger);
      // Goodbye: other edges drop whatever claims of this edge remain at once.
      presence.stop();
      core.closeAll();
      catchUps.stop();
      clearInterval(expirySweep);
      for (const subscription of subscriptions) subscription.unsubscribe();
      router.stop();
      await connection.drain();
    },
  };
}

/**
 * Points the gauges at the edge's parts and returns /readyz's report: NATS up and sessions accepted
 * decide it, the directory (its last probe's answer, at most a second old when read) only informs (edge-health.ts).
 */
function watchHealth(
  metrics: EdgeMetrics,
  core: EdgeCore,
  nats: NatsConnectedState,
  directory: DirectoryClient,
  isStopping: () => boolean,
): () => Promise<ReadinessReport> {
  const directoryProbe = new DirectoryProbe(
    () => directory.listCells(),
    () => systemClock.monotonicNowMs(),
  );
  // The first answer is there by the first probe of /readyz (a balancer asks once ready is told).
  void directoryProbe.refresh();
  const sources = {
    sessions: () => core.sessionCounts(),
    natsConnected: nats.connected,
    directoryReachable: () => directoryProbe.reachable(),
  };
  metrics.observe(sources);
  const checks = edgeReadinessChecks({ ...sources, accepting: () => !isStopping() && core.isAccepting });
  return () => readinessReport(checks);
}

/** Timers and clock of the edge's pacers (catch-ups, the drain): the system's. */
const systemSchedule = {
  monotonicNowMs: (): number => systemClock.monotonicNowMs(),
  random: Math.random,
  setTimer: (callback: () => void, delayMs: number): (() => void) => {
    const timer = setTimeout(callback, delayMs);
    return () => clearTimeout(timer);
  },
};

/**
 * The router to the workers of every cell; an edge only reads the membership buckets. Client requests
 * reach it through the RequestHandler's Router, which follows moves over the edge's directory cache.
 */
function startEdgeRouter(connection: NatsConnection, config: EdgeConfig, directory: DirectoryClient, logger: ServiceLogger): RunningRouter {
  return startRouter(
    connection,
    {
      ring: {
        namespace: config.namespace,
        leaseMs: config.leaseMs,
        requestTimeoutMs: config.cellRequestTimeoutMs,
        attemptsMax: config.cellRequestAttemptsMax,
        deadlineMs: config.cellRequestDeadlineMs,
        retryBackoff: { initialDelayMs: 25, maxDelayMs: 500, multiplier: 2 },
        watchedCellsMax: 1000,
        deletesExpiredLeases: false,
      },
      homes: directoryHomes(directory),
    },
    { clock: systemClock, logger },
  );
}

/** Client requests to their keys' homes: the directory cache in front of the directory, then the router. */
function buildRequestHandler(config: EdgeConfig, directory: DirectoryClient, router: RunningRouter, metrics: EdgeMetrics): RequestHandler {
  const cache = createEdgeDirectoryCache(
    config.directoryCacheEntriesMax,
    config.directoryCacheTtlMs,
    () => systemClock.monotonicNowMs(),
    (result) => metrics.directoryCacheLookup(result),
  );
  return new RequestHandler(
    directory,
    cache,
    // The handler's Router keeps the edge's cache of homes; each of its cell requests goes to the ring by toCell.
    {
      request: (cellId, request, deadlineAtMs, traceparent) =>
        timedCellRequest(router, metrics, cellId, request, deadlineAtMs, traceparent),
    },
    {
      options: { ...routerDefaults, deadlineMs: config.migrationWaitMs },
      requestDeadlineMs: config.requestDeadlineMs,
      dependencies: {
        monotonicNowMs: () => systemClock.monotonicNowMs(),
        random: Math.random,
        sleep,
      },
    },
    config.directConversationKey,
  );
}

/** One request to a cell through the router, its latency and any failure counted by kind (and code). */
async function timedCellRequest(
  router: RunningRouter,
  metrics: EdgeMetrics,
  cellId: string,
  request: CellRequest,
  deadlineAtMs: number | undefined,
  /** With tracing off, the request's own trace context (docs/decisions/0037). */
  traceparent: string | undefined,
): Promise<CellReply> {
  const startedAtMs = systemClock.monotonicNowMs();
  try {
    const reply = await router.toCell(cellId, request, deadlineAtMs, traceparent);
    metrics.cellRequestEnded(
      request.type,
      systemClock.monotonicNowMs() - startedAtMs,
      reply.type === "cell.error" ? reply.code : undefined,
    );
    return reply;
  } catch (error) {
    metrics.cellRequestEnded(
      request.type,
      systemClock.monotonicNowMs() - startedAtMs,
      error instanceof CellwireError ? error.code : "internal",
    );
    throw error;
  }
}

/** The member lists typing fans out to, asked of the conversations' homes. */
function buildConversationMembers(config: EdgeConfig, handler: RequestHandler): ConversationMembers {
  return new ConversationMembers(
    { conversationsMax: config.memberCacheConversationsMax, ttlMs: config.memberCacheTtlMs },
    { requestAtHome: (request) => handler.requestAtHome(request), nowMs: () => systemClock.monotonicNowMs() },
  );
}

/** This edge's presence claims and the other edges' (docs/presence), started. */
async function startPresence(connection: NatsConnection, config: EdgeConfig, logger: ServiceLogger): Promise<NatsPresenceHub> {
  const presence = new NatsPresenceHub(
    connection,
    {
      namespace: config.namespace,
      edgeInstanceId: `${config.edgeId}-${randomBytes(6).toString("hex")}`,
      heartbeatIntervalMs: config.presenceHeartbeatIntervalMs,
      claimTtlMs: config.presenceTtlMs,
      remoteClaimsMax: config.presenceRemoteClaimsMax,
      offlineUsersRememberedMax: config.presenceRemoteClaimsMax,
    },
    systemClock,
    logger,
  );
  await presence.start();
  return presence;
}

/** Who may watch whose presence: everyone, or (EDGE_PRESENCE_POLICY) users who share a conversation. */
function buildPresenceAccess(
  config: EdgeConfig,
  directory: DirectoryClient,
  handler: RequestHandler,
  logger: ServiceLogger,
): PresenceAccess {
  if (config.presencePolicy === "everyone") return new EveryoneVisible();
  return new SharedConversationAccess(
    { pairsMax: config.presenceAccessPairsMax, ttlMs: config.presenceAccessTtlMs },
    {
      listCellIds: async () => (await directory.listCells()).map((cell) => cell.cellId),
      requestCell: (cellId, request) => handler.requestInCell(cellId, request),
      nowMs: () => systemClock.monotonicNowMs(),
      warn: (message) => logger.warn(message),
    },
  );
}

function edgeLimits(config: EdgeConfig): EdgeLimits {
  return {
    authTimeoutMs: config.authTimeoutMs,
    heartbeatIntervalMs: config.heartbeatIntervalMs,
    sessionsMax: config.sessionsMax,
    sessionsPerUserMax: config.sessionsPerUserMax,
    requestsInFlightPerSessionMax: config.requestsInFlightPerSessionMax,
    requestsInFlightMax: config.requestsInFlightMax,
    overloadedRetryAfterMs: config.overloadedRetryAfterMs,
    sendBufferBytesMax: config.sendBufferBytesMax,
    heldEventsPerSessionMax: config.heldEventsPerSessionMax,
    heldBytesPerSessionMax: config.heldBytesPerSessionMax,
    conversationsPerSessionMax: config.conversationsPerSessionMax,
    conversationReadsPerSessionMax: config.conversationReadsPerSessionMax,
    typingIntervalMs: config.typingIntervalMs,
    typingConversationsPerSessionMax: config.typingConversationsPerSessionMax,
    rateLimits: config.rateLimits,
    sendOrderHoldMs: config.sendOrderHoldMs,
  };
}

/**
 * What the edge follows besides its sessions' frames: operators' revocations, the cells' rings, the
 * directory's moves and NATS reconnects. Returns the subscriptions to end at stop.
 */
function followChanges(
  connection: NatsConnection,
  config: EdgeConfig,
  core: EdgeCore,
  router: RunningRouter,
  logger: ServiceLogger,
): Subscription[] {
  // Revocations from operators (cellwire revoke). Core NATS, at most once: an edge that misses one (it
  // was disconnected, or started later) still refuses nothing for that user; see docs/security.md.
  const revocations = connection.subscribe(revocationsSubject(config.namespace), {
    callback: (error, message) => {
      if (error !== null) return;
      const decoded = decodeMessage(sessionRevoke, message.data);
      if (!decoded.ok) return logger.warn(`a session.revoke message does not decode: ${decoded.reason}`);
      const closed = core.revoke(decoded.value.userId, decoded.value.revokedAtMs);
      logger.info(`revoked the sessions of ${decoded.value.userId}: ${closed} closed here`);
    },
  });
  router.onRingChange((cellId) => core.cellMembershipChanged(cellId));
  // Moves of users and conversations: cached homes are replaced at once rather than found stale by a
  // cell.moved, and sessions follow their user's mailbox.
  const directoryChanges = subscribeDirectoryChanges(
    connection,
    config.namespace,
    (entry) => core.directoryChanged(entry),
    (message) => logger.warn(message),
  );
  void (async () => {
    for await (const status of connection.status()) {
      if (status.type === "reconnect") core.catchUpAll();
    }
  })();
  return [revocations, directoryChanges];
}

/** The uWS server, with the dev routes (token signing, the web app) in dev auth mode only. */
function startEdgeServer(
  uws: ReturnType<typeof loadNativeUws>,
  core: EdgeCore,
  config: EdgeConfig,
  readiness: () => Promise<ReadinessReport>,
  metrics: EdgeMetrics,
): Promise<RunningServer> {
  const devKeyDirectory = config.auth.mode === "dev" ? config.auth.devKeyDirectory : undefined;
  return startServer(
    uws,
    core,
    {
      host: config.host,
      port: config.port,
      idleTimeoutMs: config.idleTimeoutMs,
      sendBufferBytesMax: config.sendBufferBytesMax,
      readiness,
      metrics,
      admission: new Admission(config.admission, () => core.unauthenticatedSessionCount),
    },
    {
      signToken:
        devKeyDirectory === undefined
          ? undefined
          : (userId, deviceId) => signDevToken(devKeyDirectory, userId, deviceId === undefined ? {} : { deviceId }),
      webDirectory: config.auth.mode === "dev" ? config.webDirectory : undefined,
    },
  );
}

/**
 * The sessions leave over the drain window, each once its requests are answered; the edge keeps serving
 * them (and claiming their users' presence) until then.
 */
async function drainSessions(core: EdgeCore, config: EdgeConfig, logger: ServiceLogger): Promise<void> {
  const drained = await core.drainSessions({ drainMs: config.drainMs, graceMs: config.drainGraceMs }, systemSchedule);
  const cutOff =
    drained.closedAtGrace === 0 ? "" : `, ${drained.closedAtGrace} of them closed at the grace period's end with requests unanswered`;
  logger.info(`drained ${drained.sessions} sessions in ${Math.round(drained.durationMs)} ms${cutOff}`);
}
