// One node of the chat benchmark's Socket.IO peer: a Socket.IO 4 server on a plain node http server, its
// rooms shared across nodes by @socket.io/redis-adapter over Redis pub/sub, deployed as a typical
// production Socket.IO chat is (default server options). Forked by peer-cluster.ts; tells its parent
// `{ type: "ready", port }` once listening, `{ type: "failed", message }` if it cannot start (the
// convention of cli/src/topology.ts).
//
// Nothing is persisted, and a message reaches only the sockets in its room at that moment: a member who is
// offline never gets it, and a node that loses Redis drops what crosses nodes meanwhile. That is the point
// of the comparison: Cellwire acknowledges after its commit and keeps every message in every member's
// mailbox, while this peer acknowledges once the message has been handed to its own sockets and queued for
// Redis (the adapter does not wait for the PUBLISH reply).
//
// Settings (environment):
//   SOCKETIO_PEER_KEY        the adapter's `key` (prefix of its Redis channels), so runs never collide; required
//   SOCKETIO_PEER_PORT       0 (the default) picks a free port
//   SOCKETIO_PEER_HOST       default 127.0.0.1
//   SOCKETIO_PEER_REDIS_URL  default redis://127.0.0.1:6379
//   SOCKETIO_PEER_NODE       the node's number, for its process title socketio-peer-<n>; default 1
import { createServer } from "node:http";
import { createAdapter } from "@socket.io/redis-adapter";
import { Redis } from "ioredis";
import { Server, type Socket } from "socket.io";
// A type only (erased): the peer must not load Cellwire's modules, whose memory a benchmark would count.
import type { LauncherMessage } from "@cellwire/cluster";

const settingPrefix = "SOCKETIO_PEER_";
const settingNames = new Set(["KEY", "PORT", "HOST", "REDIS_URL", "NODE"].map((name) => settingPrefix + name));
const conversationIdPattern = /^[A-Za-z0-9_-]{1,64}$/;
/** The adapter appends `#<namespace>#<room>#` to the key: a `#` of its own would blur the channel names. */
const adapterKeyPattern = /^[A-Za-z0-9_.:-]{1,128}$/;
const bodyLengthMax = 32_768;
/**
 * How long Redis may take to answer both clients at start, after which the node reports a failed start:
 * shorter than the 20 retries (about 10 s) after which ioredis fails the adapter's own SUBSCRIBE.
 */
const redisReadyDeadlineMs = 5_000;
/** At most one line a second about Redis commands that failed while Redis was unreachable. */
const redisFailureReportIntervalMs = 1_000;
const redisQuitDeadlineMs = 1_000;
/** Shorter than peer-cluster.ts's SIGKILL deadline, so an overrun shows in this process's own output. */
const shutdownDeadlineMs = 5_000;

type PeerSettings = {
  readonly key: string;
  readonly port: number;
  readonly host: string;
  readonly redisUrl: string;
  readonly node: number;
};

type SendPayload = { readonly conversationId: string; readonly body: string };
type AcknowledgementResponse = { readonly ok: true } | { readonly ok: false; readonly error: "invalid" };
type Acknowledge = (response: AcknowledgementResponse) => void;

// Event handlers take their arguments as `unknown`: a client can send anything, in any number.
type ClientToServerEvents = {
  join: (...args: unknown[]) => void;
  send: (...args: unknown[]) => void;
};
type ServerToClientEvents = { message: (payload: SendPayload) => void };
type PeerSocket = Socket<ClientToServerEvents, ServerToClientEvents>;

// Shared, never mutated: no allocation per acknowledgement.
const accepted: AcknowledgementResponse = Object.freeze({ ok: true });
const invalid: AcknowledgementResponse = Object.freeze({ ok: false, error: "invalid" });

class PeerSettingsError extends Error {
  override readonly name = "PeerSettingsError";
}

/** The node's number alone, so that even a node with bad settings reports under its own name. */
function nodeFromEnvironment(environment: NodeJS.ProcessEnv): number | undefined {
  const raw = environment[`${settingPrefix}NODE`] ?? "1";
  const node = Number(raw);
  return /^[0-9]{1,4}$/.test(raw) && node >= 1 ? node : undefined;
}

function settingsFromEnvironment(environment: NodeJS.ProcessEnv): PeerSettings {
  const problems: string[] = [];
  for (const name of Object.keys(environment)) {
    // An unknown name is a typo of a known one, most likely SOCKETIO_PEER_KEY: better no run than runs that collide.
    if (name.startsWith(settingPrefix) && !settingNames.has(name)) problems.push(`unknown setting ${name}`);
  }
  const key = environment[`${settingPrefix}KEY`] ?? "";
  if (!adapterKeyPattern.test(key)) problems.push(`${settingPrefix}KEY must match ${String(adapterKeyPattern)} (it is required)`);
  const portText = environment[`${settingPrefix}PORT`] ?? "0";
  const port = Number(portText);
  if (!/^[0-9]{1,5}$/.test(portText) || port > 65_535) problems.push(`${settingPrefix}PORT must be a port number, or 0 for a free one`);
  const host = environment[`${settingPrefix}HOST`] ?? "127.0.0.1";
  if (host === "") problems.push(`${settingPrefix}HOST must not be empty`);
  const redisUrl = environment[`${settingPrefix}REDIS_URL`] ?? "redis://127.0.0.1:6379";
  if (!URL.canParse(redisUrl) || !["redis:", "rediss:"].includes(new URL(redisUrl).protocol)) {
    problems.push(`${settingPrefix}REDIS_URL must be a redis:// or rediss:// URL`);
  }
  const node = nodeFromEnvironment(environment);
  if (node === undefined) problems.push(`${settingPrefix}NODE must be a positive integer`);
  if (problems.length > 0 || node === undefined) throw new PeerSettingsError(problems.join("; "));
  return { key, port, host, redisUrl, node };
}

function parseSendPayload(payload: unknown): SendPayload | undefined {
  if (typeof payload !== "object" || payload === null || !("conversationId" in payload) || !("body" in payload)) return undefined;
  const { conversationId, body } = payload;
  if (typeof conversationId !== "string" || !conversationIdPattern.test(conversationId)) return undefined;
  if (typeof body !== "string" || body.length > bodyLengthMax) return undefined;
  return { conversationId, body };
}

function isAcknowledge(value: unknown): value is Acknowledge {
  return typeof value === "function";
}

/**
 * Splits an event's arguments into its payload and its acknowledgement. Socket.IO passes the client's
 * acknowledgement as the last argument, so a well-formed event has exactly two: the payload, then the
 * acknowledgement. `payload` is undefined for any other shape, and `acknowledge` whenever the last
 * argument is not a function (then there is no one to answer).
 */
function splitArguments(args: readonly unknown[]): { payload: unknown; acknowledge: Acknowledge | undefined } {
  const last = args[args.length - 1];
  const acknowledge = isAcknowledge(last) ? last : undefined;
  return { payload: acknowledge !== undefined && args.length === 2 ? args[0] : undefined, acknowledge };
}

function createLogger(processName: string): (level: "info" | "warn" | "error", message: string) => void {
  return (level, message) => {
    const stream = level === "info" ? process.stdout : process.stderr;
    stream.write(`${new Date().toISOString()} ${processName} ${level} ${message}\n`);
  };
}

/** Resolves once the message is written to the IPC channel: a process that exits right after must not lose it. */
function tellParent(message: LauncherMessage): Promise<void> {
  return new Promise((resolve) => {
    if (typeof process.send !== "function") resolve();
    else process.send(message, undefined, undefined, () => resolve());
  });
}

/** The URL's host and port alone: its user name and password stay out of the output. */
function redisAddress(redisUrl: string): string {
  return new URL(redisUrl).host;
}

function errorMessage(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

function withDeadline<T>(promise: Promise<T>, deadlineMs: number, what: string): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${what} within ${deadlineMs} ms`)), deadlineMs);
    promise.then(
      (value) => {
        clearTimeout(timer);
        resolve(value);
      },
      (error: unknown) => {
        clearTimeout(timer);
        reject(error instanceof Error ? error : new Error(String(error)));
      },
    );
  });
}

const node = nodeFromEnvironment(process.env);
const processName = node === undefined ? "socketio-peer" : `socketio-peer-${node}`;
process.title = processName;
const log = createLogger(processName);

function isRedisUnavailable(reason: unknown): boolean {
  return reason instanceof Error && (reason.name === "MaxRetriesPerRequestError" || reason.message === "Connection is closed.");
}

/**
 * The adapter publishes and subscribes without handling the promises ioredis returns: while Redis is
 * unreachable each of them rejects (after ioredis's retries) with nobody to catch it, which Node turns into
 * the end of the process. Those are counted and reported, and the node goes on serving its own sockets
 * while ioredis reconnects, as a deployed node would; any other unhandled rejection is a bug and ends it.
 */
function survivesRedisOutages(): void {
  let failuresUnreported = 0;
  let reportedAtMs = 0;
  process.on("unhandledRejection", (reason: unknown) => {
    if (!isRedisUnavailable(reason)) {
      log("error", `unhandled rejection: ${reason instanceof Error ? (reason.stack ?? reason.message) : String(reason)}`);
      process.exit(1);
    }
    failuresUnreported += 1;
    const nowMs = performance.now();
    if (nowMs - reportedAtMs < redisFailureReportIntervalMs) return;
    log("warn", `${failuresUnreported} Redis command(s) failed, the latest with: ${errorMessage(reason)}`);
    failuresUnreported = 0;
    reportedAtMs = nowMs;
  });
}

async function start(settings: PeerSettings): Promise<{ port: number; stop: () => Promise<void> }> {
  const publishClient = new Redis(settings.redisUrl, { connectionName: `${processName}-publish` });
  // The adapter puts its second client in subscriber mode: it needs a connection of its own.
  const subscribeClient = publishClient.duplicate({ connectionName: `${processName}-subscribe` });
  for (const [role, client] of [
    ["publish", publishClient],
    ["subscribe", subscribeClient],
  ] as const) {
    // Without a listener ioredis prints each reconnection failure as an unhandled error event.
    client.on("error", (error: unknown) => log("warn", `redis ${role} client: ${errorMessage(error)}`));
  }
  const httpServer = createServer();
  const io = new Server<ClientToServerEvents, ServerToClientEvents>(httpServer, {
    adapter: createAdapter(publishClient, subscribeClient, { key: settings.key }),
  });
  const stopRedis = async (): Promise<void> => {
    // QUIT lets Redis answer what is queued; while Redis is unreachable it would wait in the offline queue,
    // so past a deadline disconnect() ends the clients anyway.
    await Promise.allSettled(
      [publishClient.quit(), subscribeClient.quit()].map((quit) => withDeadline(quit, redisQuitDeadlineMs, "QUIT was not answered")),
    );
    publishClient.disconnect();
    subscribeClient.disconnect();
  };

  try {
    // The adapter issues its PSUBSCRIBE and SUBSCRIBE without waiting for them. One connection answers in
    // order, so the PING's reply means they are in place: a node must not say ready while a message from
    // another node would still miss it.
    await withDeadline(
      Promise.all([publishClient.ping(), subscribeClient.ping()]),
      redisReadyDeadlineMs,
      `Redis at ${redisAddress(settings.redisUrl)} did not answer`,
    );
    await new Promise<void>((resolve, reject) => {
      httpServer.once("error", reject);
      httpServer.listen(settings.port, settings.host, () => {
        httpServer.off("error", reject);
        resolve();
      });
    });
  } catch (error) {
    await io.close();
    await stopRedis();
    throw error;
  }

  io.on("connection", (socket: PeerSocket) => {
    socket.on("join", (...args: unknown[]) => void join(socket, args));
    socket.on("send", (...args: unknown[]) => send(args));
  });

  async function join(socket: PeerSocket, args: readonly unknown[]): Promise<void> {
    const { payload, acknowledge } = splitArguments(args);
    if (acknowledge === undefined) return;
    if (typeof payload !== "string" || !conversationIdPattern.test(payload)) {
      acknowledge(invalid);
      return;
    }
    try {
      // Synchronous with the Redis adapter (it keeps rooms in memory); awaited in case an adapter is not.
      await socket.join(payload);
      acknowledge(accepted);
    } catch (error) {
      log("error", `join failed: ${errorMessage(error)}`);
      acknowledge(invalid);
    }
  }

  function send(args: readonly unknown[]): void {
    const { payload, acknowledge } = splitArguments(args);
    if (acknowledge === undefined) return;
    const message = parseSendPayload(payload);
    if (message === undefined) {
      acknowledge(invalid);
      return;
    }
    try {
      // To every socket in the room on every node, the sender's own included when it joined.
      io.to(message.conversationId).emit("message", message);
      acknowledge(accepted);
    } catch (error) {
      // A throw here would otherwise climb out of the WebSocket's data handler and end the process.
      log("error", `send failed: ${errorMessage(error)}`);
      acknowledge(invalid);
    }
  }

  const address = httpServer.address();
  if (address === null || typeof address === "string") throw new Error("the http server has no TCP address");
  return {
    port: address.port,
    stop: async () => {
      // Disconnects every socket, closes the adapter (unsubscribing) and the http server.
      await io.close();
      await stopRedis();
    },
  };
}

/** Runs `stop` once on SIGTERM, SIGINT or the parent's disconnection, then exits 0; a second signal exits 1 at once. */
function stopOnSignals(stop: () => Promise<void>): void {
  let stopping = false;
  const handler = (reason: string): void => {
    if (stopping) process.exit(1);
    stopping = true;
    log("info", `${reason}: stopping`);
    setTimeout(() => {
      log("error", `did not stop within ${shutdownDeadlineMs} ms`);
      process.exit(1);
    }, shutdownDeadlineMs).unref();
    stop().then(
      () => process.exit(0),
      (error: unknown) => {
        log("error", `stop failed: ${errorMessage(error)}`);
        process.exit(1);
      },
    );
  };
  process.on("SIGTERM", () => handler("SIGTERM"));
  process.on("SIGINT", () => handler("SIGINT"));
  // A parent that dies must not leave its nodes serving.
  process.on("disconnect", () => handler("parent gone"));
}

try {
  const settings = settingsFromEnvironment(process.env);
  survivesRedisOutages();
  const peer = await start(settings);
  stopOnSignals(peer.stop);
  log("info", `listening on ${settings.host}:${peer.port}, redis ${redisAddress(settings.redisUrl)}, key ${settings.key}`);
  await tellParent({ type: "ready", processName, port: peer.port });
} catch (error) {
  log("error", `failed to start: ${errorMessage(error)}`);
  await tellParent({ type: "failed", processName, message: errorMessage(error) });
  process.exit(1);
}
