// The admin HTTP API (`cellwire admin-api`): the operator commands' work behind JSON endpoints, for a
// deployment that is not the local launcher (docs/decisions/0035-admin-http-api.md, docs/admin-api.md).
// Every path but the probes (/livez, /readyz) needs `Authorization: Bearer <ADMIN_TOKEN>`; /metrics also
// takes the scrape-only ADMIN_METRICS_TOKEN; tokens are compared by digest in constant time. Requests are
// answered by the same Operations the commands use; drain and add-cell stream their progress as NDJSON
// lines. Errors become responses in one function (errorResponse). Each request is counted once its work
// ends (admin-api-metrics.ts).
import { createHash, timingSafeEqual } from "node:crypto";
import { createServer, type IncomingMessage, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { parseJson } from "@cellwire/protocol";
import { readinessReport, type LogFields, type ReadinessCheck, type ServiceMetrics } from "@cellwire/cluster";
import { OperationError, type Operations, type OperationErrorCode } from "../operations.ts";
import { createAdminApiMetrics, type AdminApiMetrics, type AdminOperationLabel } from "./admin-api-metrics.ts";
import { AdminHttpError, matchRoute, parseAdminRequest, type AdminRequest } from "./routes.ts";

/** A request body larger than this is refused (413) before it is parsed: the largest, a redrive of 4096 ids, is ~60 KiB. */
export const requestBodyBytesMax = 64 * 1024;
/** Requests handled at once; past it one is answered 503 `busy` (a drain holds one for its whole run). */
export const requestsInFlightMaxDefault = 16;
export const adminApiProcessName = "cellwire-admin";
export const ndjsonContentType = "application/x-ndjson";

export type AdminApiLogger = {
  readonly info: (message: string, fields?: LogFields) => void;
  readonly warn: (message: string, fields?: LogFields) => void;
};

export type AdminApiOptions = {
  readonly host: string;
  /** 0 picks a free port; the chosen one is in the result. */
  readonly port: number;
  /** The bearer token every request but the probes must carry. */
  readonly token: string;
  /** A token that opens /metrics and nothing else, for a scraper (ADMIN_METRICS_TOKEN); none: only `token` does. */
  readonly metricsToken?: string;
  /** The process's registry: /metrics serves it, and the API's own metrics are registered on it. */
  readonly serviceMetrics: ServiceMetrics;
  /** What /readyz runs (the NATS connection's state). */
  readonly readiness: readonly ReadinessCheck[];
  readonly operations: Operations;
  readonly logger: AdminApiLogger;
  readonly requestsInFlightMax?: number;
};

export type AdminApi = { readonly port: number; stop(): Promise<void> };

/** Whether `header` is `Bearer <token>`: both sides hashed to equal-length digests, compared in constant time. */
export function bearerTokenMatches(header: string | undefined, expectedDigest: Buffer): boolean {
  if (header === undefined) return false;
  const match = /^Bearer ([\x21-\x7e]+)$/i.exec(header);
  if (match === null) return false;
  return timingSafeEqual(
    createHash("sha256")
      .update(match[1] ?? "")
      .digest(),
    expectedDigest,
  );
}

export function tokenDigest(token: string): Buffer {
  return createHash("sha256").update(token).digest();
}

const statusOfOperationError: Readonly<Record<OperationErrorCode, number>> = {
  invalid_input: 400,
  not_found: 404,
  conflict: 409,
  unavailable: 503,
  // The cells or the directory ran the operation and it did not complete: the API is their gateway.
  failed: 502,
};

/** The one place an error becomes an HTTP status and a body. */
export function errorResponse(error: unknown): { status: number; code: string; message: string; headers: Record<string, string> } {
  if (error instanceof AdminHttpError)
    return { status: error.status, code: error.code, message: error.message, headers: { ...error.headers } };
  if (error instanceof OperationError)
    return { status: statusOfOperationError[error.code], code: error.code, message: error.message, headers: {} };
  return { status: 500, code: "internal", message: "internal error (see the admin API's log)", headers: {} };
}

function errorBody(code: string, message: string): string {
  return JSON.stringify({ error: { code, message } });
}

/** The body, at most requestBodyBytesMax bytes, as parsed JSON; an empty body is `{}`. */
async function readJsonBody(request: IncomingMessage): Promise<unknown> {
  const declared = Number(request.headers["content-length"] ?? "0");
  if (declared > requestBodyBytesMax)
    throw new AdminHttpError(413, "payload_too_large", `a body must be at most ${requestBodyBytesMax} bytes`);
  const chunks: Buffer[] = [];
  let bytes = 0;
  for await (const chunk of request as AsyncIterable<Buffer>) {
    bytes += chunk.length;
    if (bytes > requestBodyBytesMax)
      throw new AdminHttpError(413, "payload_too_large", `a body must be at most ${requestBodyBytesMax} bytes`);
    chunks.push(chunk);
  }
  if (bytes === 0) return {};
  const type = request.headers["content-type"] ?? "";
  if (!/^application\/json\s*(;|$)/i.test(type)) throw new AdminHttpError(415, "unsupported_media_type", "a body must be application/json");
  const parsed = parseJson(Buffer.concat(chunks).toString("utf8"));
  if (!parsed.ok) throw new AdminHttpError(400, "invalid_input", "the body is not valid JSON");
  return parsed.value;
}

/**
 * Writes NDJSON lines: progress as the operation reports it, then its result or its error. The status line
 * waits for the first of them, so an operation refused before any progress is answered with its own status.
 */
class ProgressStream {
  private started = false;
  constructor(private readonly response: ServerResponse) {}

  line(value: unknown): void {
    if (!this.started) {
      this.started = true;
      this.response.writeHead(200, { "content-type": ndjsonContentType, "cache-control": "no-store" });
    }
    this.response.write(`${JSON.stringify(value)}\n`);
  }

  get hasStarted(): boolean {
    return this.started;
  }
}

/** The JSON value of a plain request, or the stream a long one wrote. */
async function perform(operations: Operations, request: AdminRequest, stream: ProgressStream): Promise<unknown> {
  switch (request.operation) {
    case "cells":
      return operations.cells();
    case "ring":
      return operations.ring(request.cellId);
    case "whereis":
      return operations.whereis(request.userId);
    case "migrate":
      return operations.migrate(request.kind, request.id, request.toCellId);
    case "revoke":
      return operations.revoke(request.userId);
    case "deadLetters":
      return operations.deadLetters(request.cellId, request.rowsMax);
    case "redrive":
      return operations.redrive(request.cellId, request.selection);
    case "drain":
      return operations.drain(request.cellId, request.concurrency, (progress) => stream.line({ type: "progress", progress }));
    case "addCell":
      return operations.addCell(request.cellId, request.workers, request.weight, (progress) => stream.line({ type: "progress", progress }));
  }
}

const streamingOperations: ReadonlySet<AdminRequest["operation"]> = new Set(["drain", "addCell"]);

/** What every request of one API shares: the operations, the tokens' digests and the in-flight count. */
type ApiContext = {
  readonly operations: Operations;
  readonly logger: AdminApiLogger;
  readonly expectedDigest: Buffer;
  readonly metricsDigest: Buffer | undefined;
  readonly requestsInFlightMax: number;
  readonly serviceMetrics: ServiceMetrics;
  readonly readiness: readonly ReadinessCheck[];
  inFlight: number;
};

/**
 * What one request is counted as once it ends: the operation it named (none until routed) and its outcome,
 * an error code or "ok". Answered probes and scrapes are not counted (they are no operator's request and
 * would drown the rest); a refused one is, under none, like any request without the token.
 */
type RequestTally = { counted: boolean; operation: AdminOperationLabel; outcome: string };

const unauthorized = (): AdminHttpError =>
  new AdminHttpError(401, "unauthorized", "an Authorization: Bearer <ADMIN_TOKEN> header is required", {
    "www-authenticate": 'Bearer realm="cellwire-admin"',
  });

const probePaths: ReadonlySet<string> = new Set(["/livez", "/readyz", "/metrics"]);

/** Serves one of probePaths. */
async function answerProbe(context: ApiContext, request: IncomingMessage, response: ServerResponse, path: string): Promise<void> {
  const method = request.method ?? "GET";
  if (path === "/livez") {
    // Answering at all is the proof; it tells nothing about the deployment, so it needs no token.
    response.writeHead(method === "GET" ? 200 : 405, { "content-type": "application/json" }).end('{"live":true}');
    return;
  }
  if (path === "/readyz") {
    // No token either: a balancer's or an orchestrator's probe carries none, and the answer says only
    // whether this process reaches NATS (up or down, and why not), nothing of the cells or the users.
    if (method !== "GET") {
      response.writeHead(405, { allow: "GET", "content-type": "application/json" }).end();
      return;
    }
    const report = await readinessReport(context.readiness);
    response
      .writeHead(report.ready ? 200 : 503, { "content-type": "application/json", "cache-control": "no-store" })
      .end(JSON.stringify(report));
    return;
  }
  if (path === "/metrics") {
    // A token, as on every other path: this listener may face more than the deployment's own network, and
    // a scrape tells the operators' activity and the Node version. The scrape-only token keeps the
    // scraper from holding ADMIN_TOKEN's powers (docs/decisions/0035-admin-http-api.md, 7).
    const header = request.headers.authorization;
    const allowed =
      bearerTokenMatches(header, context.expectedDigest) ||
      (context.metricsDigest !== undefined && bearerTokenMatches(header, context.metricsDigest));
    if (!allowed) throw unauthorized();
    if (method !== "GET") throw new AdminHttpError(405, "method_not_allowed", "use GET", { allow: "GET" });
    const text = await context.serviceMetrics.scrape();
    response.writeHead(200, { "content-type": context.serviceMetrics.contentType, "cache-control": "no-store" }).end(text);
  }
}

/** Authenticates, routes, parses and performs one request; throws what errorResponse maps. */
async function answer(context: ApiContext, request: IncomingMessage, response: ServerResponse, tally: RequestTally): Promise<void> {
  const url = request.url ?? "/";
  const method = request.method ?? "GET";
  const queryStart = url.indexOf("?");
  const path = queryStart === -1 ? url : url.slice(0, queryStart);
  if (probePaths.has(path)) {
    tally.counted = false;
    await answerProbe(context, request, response, path);
    return;
  }
  if (!bearerTokenMatches(request.headers.authorization, context.expectedDigest)) throw unauthorized();
  const match = matchRoute(method, url);
  tally.operation = match.route.operation;
  const body = match.route.hasBody ? await readJsonBody(request) : undefined;
  const adminRequest = parseAdminRequest(match, body);
  if (context.inFlight >= context.requestsInFlightMax)
    throw new AdminHttpError(503, "busy", `${context.requestsInFlightMax} requests are in flight; try again when one ends`, {
      "retry-after": "1",
    });
  context.inFlight += 1;
  const stream = new ProgressStream(response);
  try {
    let result: unknown;
    try {
      result = await perform(context.operations, adminRequest, stream);
    } catch (error) {
      // Once the stream has begun its status is sent: the error is its last line.
      if (!stream.hasStarted) throw error;
      const { code, message } = errorResponse(error);
      tally.outcome = code;
      if (code === "internal") context.logger.warn(`${adminRequest.operation} failed: ${String(error)}`);
      stream.line({ type: "error", error: { code, message } });
      response.end();
      return;
    }
    if (streamingOperations.has(adminRequest.operation)) {
      stream.line({ type: "result", result });
      response.end();
    } else {
      response.writeHead(200, { "content-type": "application/json", "cache-control": "no-store" }).end(JSON.stringify(result));
    }
  } finally {
    context.inFlight -= 1;
  }
}

/**
 * When the admin API is ready: while its NATS connection is up, which every operation needs. The same check,
 * name and detail as a worker's and the directory's `nats`.
 */
export function adminApiReadiness(natsConnected: () => boolean): ReadinessCheck[] {
  return [
    { name: "nats", check: () => (natsConnected() ? { ok: true } : { ok: false, detail: "the NATS connection is down; reconnecting" }) },
  ];
}

export async function startAdminApi(options: AdminApiOptions): Promise<AdminApi> {
  const context: ApiContext = {
    operations: options.operations,
    logger: options.logger,
    expectedDigest: tokenDigest(options.token),
    metricsDigest: options.metricsToken === undefined ? undefined : tokenDigest(options.metricsToken),
    requestsInFlightMax: options.requestsInFlightMax ?? requestsInFlightMaxDefault,
    serviceMetrics: options.serviceMetrics,
    readiness: options.readiness,
    inFlight: 0,
  };
  const metrics: AdminApiMetrics = createAdminApiMetrics(options.serviceMetrics.registry, () => context.inFlight);
  const server = createServer((request, response) => {
    const startedAtMs = performance.now();
    const tally: RequestTally = { counted: true, operation: "none", outcome: "ok" };
    response.once("finish", () => {
      // The path only: a query can hold a user id, and no header (the token) is ever logged.
      options.logger.info("request", {
        method: request.method,
        path: (request.url ?? "/").split("?")[0],
        status: response.statusCode,
        tookMs: Math.round(performance.now() - startedAtMs),
      });
    });
    void answer(context, request, response, tally)
      .catch((error: unknown) => {
        const { status, code, message, headers } = errorResponse(error);
        // A refused probe or scrape is counted too: a scraper with a wrong token should show.
        tally.counted = true;
        tally.outcome = code;
        if (status === 500)
          options.logger.warn(`request failed: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}`);
        if (response.headersSent) {
          response.end();
          return;
        }
        // A refused body is not read to its end: the connection closes after the answer.
        if (status === 413) headers["connection"] = "close";
        response.writeHead(status, { ...headers, "content-type": "application/json" }).end(errorBody(code, message));
      })
      // Once the work ends, not when the client leaves: a drain whose watcher went away still runs, and its
      // outcome and time are the drain's.
      .finally(() => {
        if (tally.counted) metrics.requestEnded(tally.operation, tally.outcome, (performance.now() - startedAtMs) / 1000);
      });
  });
  server.keepAliveTimeout = 5000;
  server.headersTimeout = 10_000;
  server.requestTimeout = 30_000;
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(options.port, options.host, () => {
      server.off("error", reject);
      resolve();
    });
  });
  return {
    port: (server.address() as AddressInfo).port,
    stop: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}
