// uWebSockets.js wiring: /ws, /metrics, /livez, /readyz, /healthz and, in dev mode, the web page and
// /dev/token. It moves bytes between sockets and the EdgeCore and holds no logic of its own.
import { readdir, readFile } from "node:fs/promises";
import { extname, join } from "node:path";
import type uWS from "uWebSockets.js";
import { frameBytesMax, isDeviceId, isUserId, standardCloseCodes, upgradeRefusals } from "@cellwire/protocol";
import type { ReadinessReport } from "@cellwire/cluster";
import type { Admission } from "./admission.ts";
import type { EdgeCore, Session } from "./edge-core.ts";
import type { ServerMetrics } from "./edge-metrics.ts";
import { listenBacklogRequested, raiseListenBacklog } from "./listen-backlog.ts";
import { TurnWrites, UwsTransport } from "./uws-transport.ts";

type SocketData = { session: Session | undefined; transport: UwsTransport | undefined; readonly clientAddress: string };

/**
 * uWS cuts a socket whose frame passes its maxPayloadLength without a close frame (the client sees 1006
 * and would resend the same frame after reconnecting), so its limit sits above frameBytesMax and the edge
 * closes a frame between the two with 1009 itself. Frames past this are still cut by uWS.
 */
const receivedFrameBytesMax = 2 * frameBytesMax;

/**
 * Hands the hellos of one turn of the event loop to the core together, at its end (setImmediate): the
 * requests they start (the directory for a user not cached, the mailbox's head) then leave in one NATS
 * write rather than one each, and a wave of connects costs fewer syscalls here, in NATS and in the
 * services. At most hellosPerTurnMax go per turn, the rest at the next ones, so that a wave of thousands
 * (the clients of a dead edge) neither holds the event loop (accepts, replies) for their whole
 * verification nor sends the directory thousands of requests at once. A frame that arrives behind a
 * waiting hello waits with it, so a session's frames keep their order, and a frame after the hello was
 * handed over is handled at once, as before (during authentication that closes the session with 4200).
 */
const hellosPerTurnMax = 64;

class HelloBatch {
  private waiting: { readonly session: Session; readonly transport: UwsTransport }[] = [];
  private scheduled = false;

  /** Takes the frame if it must wait (the socket's first, or one behind it); false to handle it now. */
  take(session: Session, transport: UwsTransport, text: string, isBinary: boolean): boolean {
    if (transport.waitingFrames !== undefined) {
      transport.waitingFrames.push({ text, isBinary });
      return true;
    }
    if (transport.firstFrameSeen) return false;
    transport.firstFrameSeen = true;
    transport.waitingFrames = [{ text, isBinary }];
    this.waiting.push({ session, transport });
    if (!this.scheduled) {
      this.scheduled = true;
      setImmediate(this.handOver);
    }
    return true;
  }

  private readonly handOver = (): void => {
    // splice, not shift in a loop: one copy per turn of what is left.
    const turn = this.waiting.splice(0, hellosPerTurnMax);
    this.scheduled = this.waiting.length > 0;
    if (this.scheduled) setImmediate(this.handOver);
    for (const { session, transport } of turn) {
      const frames = transport.waitingFrames ?? [];
      transport.waitingFrames = undefined;
      // A socket closed meanwhile has its session closed too, which ignores what it receives.
      for (const frame of frames) session.receive(frame.text, frame.isBinary);
    }
  };
}

export type DevRoutes = {
  /** Signs a dev token; undefined disables /dev/token. */
  readonly signToken: ((userId: string, deviceId: string | undefined) => Promise<string>) | undefined;
  readonly webDirectory: string | undefined;
};

export type ServerOptions = {
  readonly host: string;
  readonly port: number;
  readonly idleTimeoutMs: number;
  readonly sendBufferBytesMax: number;
  /** /readyz (and /healthz's `ready`): the edge's checks (edge-health.ts). */
  readonly readiness: () => Promise<ReadinessReport>;
  /** Decides each upgrade (Origin, sockets per address, the unauthenticated budget) and counts sockets per address. */
  readonly admission: Admission;
  /** Counts refused upgrades and closes; /metrics serves `scrape`. */
  readonly metrics: ServerMetrics & { scrape(): Promise<string>; readonly contentType: string };
};

const contentTypes: Record<string, string> = {
  ".html": "text/html; charset=utf-8",
  ".js": "text/javascript; charset=utf-8",
  ".css": "text/css; charset=utf-8",
  ".map": "application/json",
  ".svg": "image/svg+xml",
};

async function loadStaticFiles(directory: string): Promise<Map<string, { body: Buffer; contentType: string }>> {
  const files = new Map<string, { body: Buffer; contentType: string }>();
  for (const name of await readdir(directory)) {
    const contentType = contentTypes[extname(name)];
    if (contentType === undefined) continue;
    files.set(`/${name}`, { body: await readFile(join(directory, name)), contentType });
  }
  const index = files.get("/index.html");
  if (index !== undefined) files.set("/", index);
  return files;
}

/**
 * /healthz: the edge's counters, refusals included, so an operator sees who is kept out and why; kept for
 * the tools that read it, with /readyz's verdict and checks beside them. Always 200: it reports, /readyz decides.
 */
function healthOf(core: EdgeCore, admission: Admission, readiness: ReadinessReport): Record<string, unknown> {
  return {
    status: "ok",
    sessions: core.sessionCount,
    unauthenticatedSessions: core.unauthenticatedSessionCount,
    refusals: { ...admission.refusals, too_many_sessions: core.tooManySessionsRefusals },
    ready: readiness.ready,
    checks: readiness.checks,
  };
}

/**
 * Answers a GET whose body takes an await. uWS rules: onAborted before returning (a response whose client
 * left must not be written), and the late writes corked into one.
 */
function answerLater(
  response: uWS.HttpResponse,
  body: () => Promise<{ readonly status: string; readonly contentType: string; readonly text: string }>,
): void {
  let aborted = false;
  response.onAborted(() => {
    aborted = true;
  });
  body().then(
    ({ status, contentType, text }) => {
      if (aborted) return;
      response.cork(() => response.writeStatus(status).writeHeader("content-type", contentType).end(text));
    },
    (error: unknown) => {
      if (aborted) return;
      const message = error instanceof Error ? error.message : "internal error";
      response.cork(() => response.writeStatus("500 Internal Server Error").writeHeader("content-type", "text/plain").end(message));
    },
  );
}

export type RunningServer = { readonly port: number; stopListening(): void };

export async function startServer(uws: typeof uWS, core: EdgeCore, options: ServerOptions, dev: DevRoutes): Promise<RunningServer> {
  const staticFiles =
    dev.webDirectory === undefined ? new Map<string, { body: Buffer; contentType: string }>() : await loadStaticFiles(dev.webDirectory);
  const app = uws.App();
  const hellos = new HelloBatch();
  const turnWrites = new TurnWrites(setImmediate);
  const admission = options.admission;

  app.ws<SocketData>("/ws", {
    maxPayloadLength: receivedFrameBytesMax,
    // uWS counts in seconds and pings idle sockets itself.
    idleTimeout: Math.max(8, Math.round(options.idleTimeoutMs / 1000)),
    sendPingsAutomatically: true,
    // The core closes a slow consumer at sendBufferBytesMax; uWS's own limit sits above it so it never
    // drops a frame silently first.
    maxBackpressure: options.sendBufferBytesMax * 2,
    closeOnBackpressureLimit: 0,
    upgrade: (response, request, context) => {
      // Refused here, before a socket, a session or its auth timer exists: a refusal costs one HTTP answer.
      const decision = admission.decide({
        peerAddress: Buffer.from(response.getRemoteAddressAsText()).toString("latin1"),
        proxiedAddress: Buffer.from(response.getProxiedRemoteAddressAsText()).toString("latin1"),
        origin: request.getHeader("origin"),
        forwardedFor: request.getHeader("x-forwarded-for"),
      });
      if (!decision.admitted) {
        options.metrics.upgradeRefused(decision.refusal);
        const refusal = upgradeRefusals[decision.refusal];
        response
          .writeStatus(`${refusal.status} ${refusal.statusText}`)
          .writeHeader("content-type", "text/plain")
          .end(`${decision.refusal}: ${refusal.description}`);
        return;
      }
      response.upgrade<SocketData>(
        { session: undefined, transport: undefined, clientAddress: decision.clientAddress },
        request.getHeader("sec-websocket-key"),
        request.getHeader("sec-websocket-protocol"),
        request.getHeader("sec-websocket-extensions"),
        context,
      );
    },
    open: (socket) => {
      const data = socket.getUserData();
      admission.connected(data.clientAddress);
      const transport = new UwsTransport(socket, turnWrites);
      data.transport = transport;
      data.session = core.openSession(transport);
    },
    message: (socket, payload, isBinary) => {
      const { session, transport } = socket.getUserData();
      if (payload.byteLength > frameBytesMax) {
        transport?.close(standardCloseCodes.messageTooBig, `frames are at most ${frameBytesMax} bytes`);
        return;
      }
      if (session === undefined || transport === undefined) return;
      const text = isBinary ? "" : Buffer.from(payload).toString("utf8");
      if (!hellos.take(session, transport, text, isBinary)) session.receive(text, isBinary);
    },
    close: (socket, code) => {
      options.metrics.socketClosed(code);
      const data = socket.getUserData();
      admission.disconnected(data.clientAddress);
      if (data.transport !== undefined) data.transport.isClosed = true;
      data.session?.closed();
    },
  });

  app.get("/healthz", (response) => {
    answerLater(response, async () => {
      const readiness = await options.readiness();
      return { status: "200 OK", contentType: "application/json", text: JSON.stringify(healthOf(core, admission, readiness)) };
    });
  });
  // Ready: connected to NATS and accepting sessions; 503 takes the edge out of the balancer (edge-health.ts).
  app.get("/readyz", (response) => {
    answerLater(response, async () => {
      const report = await options.readiness();
      return { status: report.ready ? "200 OK" : "503 Service Unavailable", contentType: "application/json", text: JSON.stringify(report) };
    });
  });
  // Live: answering at all is the proof, since a wedged event loop does not.
  app.get("/livez", (response) => {
    response.writeHeader("content-type", "application/json").end('{"live":true}');
  });
  app.get("/metrics", (response) => {
    answerLater(response, async () => ({
      status: "200 OK",
      contentType: options.metrics.contentType,
      text: await options.metrics.scrape(),
    }));
  });

  const signToken = dev.signToken;
  if (signToken !== undefined) {
    app.get("/dev/token", (response, request) => {
      const query = new URLSearchParams(request.getQuery() ?? "");
      const userId = query.get("userId") ?? "";
      const deviceId = query.get("deviceId") ?? undefined;
      let aborted = false;
      response.onAborted(() => {
        aborted = true;
      });
      if (!isUserId(userId) || (deviceId !== undefined && !isDeviceId(deviceId))) {
        response
          .writeStatus("400 Bad Request")
          .writeHeader("content-type", "application/json")
          .end(JSON.stringify({ error: "userId and deviceId must match [A-Za-z0-9_-]{1,64}" }));
        return;
      }
      signToken(userId, deviceId).then(
        (token) => {
          if (aborted) return;
          response.cork(() =>
            response
              .writeHeader("content-type", "application/json")
              .writeHeader("cache-control", "no-store")
              .end(JSON.stringify({ token })),
          );
        },
        () => {
          if (aborted) return;
          response.cork(() => response.writeStatus("500 Internal Server Error").end());
        },
      );
    });
  }

  app.get("/*", (response, request) => {
    const file = staticFiles.get(request.getUrl());
    if (file === undefined) {
      response.writeStatus("404 Not Found").end("not found");
      return;
    }
    response.writeHeader("content-type", file.contentType).writeHeader("cache-control", "no-cache").end(file.body);
  });

  const server = await new Promise<RunningServer>((resolve, reject) => {
    app.listen(options.host, options.port, (listenSocket) => {
      if (listenSocket === false) {
        reject(new Error(`could not listen on ${options.host}:${options.port} (in use?)`));
        return;
      }
      resolve({
        port: uws.us_socket_local_port(listenSocket),
        stopListening: () => uws.us_listen_socket_close(listenSocket),
      });
    });
  });
  // Before the edge reports ready: the clients of a dead edge arrive together (listen-backlog.ts).
  const backlog = await raiseListenBacklog(server.port);
  if (!backlog.raised) {
    process.emitWarning(
      `the listen backlog of port ${server.port} stays at uWebSockets.js's 512 instead of ${listenBacklogRequested}: ${backlog.reason}`,
    );
  }
  return server;
}
