// The admin HTTP API (`cellwire admin-api`): the operator commands' work behind JSON endpoints, for a
// deployment that is not the local launcher (docs/decisions/0035-admin-http-api.md, docs/admin-api.md).
// Every path but /livez needs `Authorization: Bearer <ADMIN_TOKEN>`; the token is compared by digest in
// constant time. Requests are answered by the same Operations the commands use; drain and add-cell stream
// their progress as NDJSON lines. Errors become responses in one function (errorResponse).
import { createHash, timingSafeEqual } from "node:crypto";
import { createServer, type IncomingMessage, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { parseJson } from "@cellwire/protocol";
import type { LogFields } from "@cellwire/cluster";
import { OperationError, type Operations, type OperationErrorCode } from "../operations.ts";
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
  /** The bearer token every request but /livez must carry. */
  readonly token: string;
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

/** What every request of one API shares: the operations, the token's digest and the in-flight count. */
type ApiContext = {
  readonly operations: Operations;
  readonly logger: AdminApiLogger;
  readonly expectedDigest: Buffer;
  readonly requestsInFlightMax: number;
  inFlight: number;
};

/** Authenticates, routes, parses and performs one request; throws what errorResponse maps. */
async function answer(context: ApiContext, request: IncomingMessage, response: ServerResponse): Promise<void> {
  const url = request.url ?? "/";
  const method = request.method ?? "GET";
  if (url === "/livez") {
    // Answering at all is the proof; it tells nothing about the deployment, so it needs no token.
    response.writeHead(method === "GET" ? 200 : 405, { "content-type": "application/json" }).end('{"live":true}');
    return;
  }
  if (!bearerTokenMatches(request.headers.authorization, context.expectedDigest))
    throw new AdminHttpError(401, "unauthorized", "an Authorization: Bearer <ADMIN_TOKEN> header is required", {
      "www-authenticate": 'Bearer realm="cellwire-admin"',
    });
  const match = matchRoute(method, url);
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

export async function startAdminApi(options: AdminApiOptions): Promise<AdminApi> {
  const context: ApiContext = {
    operations: options.operations,
    logger: options.logger,
    expectedDigest: tokenDigest(options.token),
    requestsInFlightMax: options.requestsInFlightMax ?? requestsInFlightMaxDefault,
    inFlight: 0,
  };
  const server = createServer((request, response) => {
    const startedAtMs = performance.now();
    response.once("finish", () => {
      // The path only: a query can hold a user id, and no header (the token) is ever logged.
      options.logger.info("request", {
        method: request.method,
        path: (request.url ?? "/").split("?")[0],
        status: response.statusCode,
        tookMs: Math.round(performance.now() - startedAtMs),
      });
    });
    answer(context, request, response).catch((error: unknown) => {
      const { status, code, message, headers } = errorResponse(error);
      if (status === 500) options.logger.warn(`request failed: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}`);
      if (response.headersSent) {
        response.end();
        return;
      }
      // A refused body is not read to its end: the connection closes after the answer.
      if (status === 413) headers["connection"] = "close";
      response.writeHead(status, { ...headers, "content-type": "application/json" }).end(errorBody(code, message));
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
