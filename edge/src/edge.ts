// Starts an edge from its config: NATS, the directory client and cache, the cell router, the delivery
// hub, typing and presence, the token verifier and the uWS server.
import { randomBytes } from "node:crypto";
import {
  CellRouter,
  ConcurrencyLimiter,
  anonymousNatsAccess,
  connectNats,
  decodeMessage,
  DirectoryClient,
  homeRouterDefaults,
  systemClock,
  type ServiceLogger,
  sleep,
} from "@cellwire/cluster";
import { directoryChange, directoryChangesSubject, revocationsSubject, sessionRevoke } from "@cellwire/protocol";
import { Admission } from "./admission.ts";
import { RevocationList } from "./auth/revocation-list.ts";
import { createTokenVerifier } from "./auth/token-verifier.ts";
import { signDevToken } from "./auth/dev-keys.ts";
import type { EdgeConfig } from "./config.ts";
import { DirectoryCache } from "./directory-cache.ts";
import { CatchUpPacer } from "./catch-up-pacer.ts";
import { EdgeCore, type Session } from "./edge-core.ts";
import { NatsDeliveryHub } from "./delivery-hub.ts";
import { RequestHandler } from "./request-handler.ts";
import { startServer } from "./edge-server.ts";
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
  const verifier = await createTokenVerifier(config.auth, {
    clockToleranceMs: config.clockToleranceMs,
    wallNowMs: () => systemClock.wallNowMs(),
  });
  const connection = await connectNats(
    config.natsServers,
    `cellwire-edge-${config.edgeId}`,
    logger,
    config.natsAccess ?? anonymousNatsAccess("edge"),
  );
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
      deletesExpiredLeases: false,
    },
    systemClock,
    logger,
  );
  const hub = new NatsDeliveryHub(connection, config.namespace, logger.warn);
  // Every delivery of the deployment reaches this edge from here on (docs/decisions/0011).
  await hub.start();
  const handler = new RequestHandler(
    directory,
    cache,
    router,
    {
      options: { ...homeRouterDefaults, deadlineMs: config.migrationWaitMs },
      requestDeadlineMs: config.requestDeadlineMs,
      dependencies: {
        monotonicNowMs: () => systemClock.monotonicNowMs(),
        random: Math.random,
        sleep,
      },
    },
    config.directConversationKey,
  );
  const members = new ConversationMembers(
    { conversationsMax: config.memberCacheConversationsMax, ttlMs: config.memberCacheTtlMs },
    { requestAtHome: (request) => handler.requestAtHome(request), nowMs: () => systemClock.monotonicNowMs() },
  );
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
  const presenceAccess: PresenceAccess =
    config.presencePolicy === "everyone"
      ? new EveryoneVisible()
      : new SharedConversationAccess(
          { pairsMax: config.presenceAccessPairsMax, ttlMs: config.presenceAccessTtlMs },
          {
            listCellIds: async () => (await directory.listCells()).map((cell) => cell.cellId),
            requestCell: (cellId, request) => router.request(cellId, request),
            nowMs: () => systemClock.monotonicNowMs(),
            warn: (message) => logger.warn(message),
          },
        );
  const catchUps = new CatchUpPacer<Session>(
    { spreadMs: config.catchUpSpreadMs, readsInFlightMax: config.catchUpReadsInFlightMax },
    {
      monotonicNowMs: () => systemClock.monotonicNowMs(),
      random: Math.random,
      setTimer: (callback, delayMs) => {
        const timer = setTimeout(callback, delayMs);
        return () => clearTimeout(timer);
      },
    },
    (message) => logger.warn(message),
  );
  const core = new EdgeCore(
    {
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
    },
    verifier,
    handler,
    hub,
    logger,
    {
      typing: new TypingRelay(members, hub, config.typingExpiresInMs),
      presence,
      presenceAccess,
      monotonicNowMs: () => systemClock.monotonicNowMs(),
    },
    new ConcurrencyLimiter(config.conversationReadsInFlightMax),
    {
      wallNowMs: () => systemClock.wallNowMs(),
      revocations: new RevocationList({ revocationsMax: config.revocationsMax, retentionMs: config.revocationRetentionMs }),
    },
    catchUps,
  );
  const expirySweep = setInterval(() => core.closeExpiredSessions(), tokenExpirySweepIntervalMs);
  expirySweep.unref();
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
  // cell.moved, and sessions follow their user's mailbox. A change missed (NATS is at most once here)
  // costs only that: the next request meets cell.moved and follows it.
  const directoryChanges = connection.subscribe(directoryChangesSubject(config.namespace), {
    callback: (error, message) => {
      if (error !== null) return;
      const decoded = decodeMessage(directoryChange, message.data);
      if (decoded.ok) core.directoryChanged(decoded.value.entry);
      else logger.warn(`a directory.changed message does not decode: ${decoded.reason}`);
    },
  });
  void (async () => {
    for await (const status of connection.status()) if (status.type === "reconnect") core.catchUpAll();
  })();
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
  logger.info(`listening on ws://${config.host}:${server.port}/ws (auth: ${config.auth.mode})`);
  return {
    port: server.port,
    stop: async () => {
      stopping = true;
      // New connections are refused by the kernel from here on, so clients go to another edge at once.
      server.stopListening();
      // The sessions leave over the drain window, each once its requests are answered; the edge keeps
      // serving them (and claiming their users' presence) until then.
      const drained = await core.drainSessions(
        { drainMs: config.drainMs, graceMs: config.drainGraceMs },
        {
          monotonicNowMs: () => systemClock.monotonicNowMs(),
          random: Math.random,
          setTimer: (callback, delayMs) => {
            const timer = setTimeout(callback, delayMs);
            return () => clearTimeout(timer);
          },
        },
      );
      const cutOff =
        drained.closedAtGrace === 0 ? "" : `, ${drained.closedAtGrace} of them closed at the grace period's end with requests unanswered`;
      logger.info(`drained ${drained.sessions} sessions in ${Math.round(drained.durationMs)} ms${cutOff}`);
      // Goodbye: other edges drop whatever claims of this edge remain at once.
      presence.stop();
      core.closeAll();
      catchUps.stop();
      clearInterval(expirySweep);
      revocations.unsubscribe();
      directoryChanges.unsubscribe();
      router.stop();
      await connection.drain();
    },
  };
}
