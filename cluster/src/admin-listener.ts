// A worker's or the directory's internal HTTP listener: /metrics, /livez and /readyz. Bound to 127.0.0.1
// unless the operator says otherwise (WORKER_ADMIN_HOST, DIRECTORY_ADMIN_HOST): what it shows is for the
// deployment's own scrapers and probes, not for clients. Edges serve the same paths on their public port.
import { createServer, type IncomingMessage, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { readinessReport, type ReadinessCheck } from "./health.ts";
import type { ServiceMetrics } from "./service-metrics.ts";

export interface AdminListenerOptions {
  readonly host: string;
  /** 0 picks a free port (tests); the chosen one is in the result. */
  readonly port: number;
  readonly metrics: ServiceMetrics;
  readonly readiness: readonly ReadinessCheck[];
}

export interface AdminListener {
  readonly port: number;
  readonly stop: () => Promise<void>;
}

export async function startAdminListener(options: AdminListenerOptions): Promise<AdminListener> {
  const server = createServer((request, response) => {
    void answer(options, request, response).catch((error: unknown) => {
      if (!response.headersSent) response.writeHead(500, { "content-type": "text/plain" });
      response.end(error instanceof Error ? error.message : "internal error");
    });
  });
  // A scraper keeps its connection open between scrapes; none may hold the process at stop.
  server.keepAliveTimeout = 5000;
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(options.port, options.host, () => {
      server.off("error", reject);
      resolve();
    });
  });
  const port = (server.address() as AddressInfo).port;
  return {
    port,
    stop: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}

async function answer(options: AdminListenerOptions, request: IncomingMessage, response: ServerResponse): Promise<void> {
  const path = (request.url ?? "/").split("?")[0];
  if (request.method !== "GET" && request.method !== "HEAD") {
    response.writeHead(405, { allow: "GET, HEAD" }).end();
    return;
  }
  if (path === "/metrics") {
    const text = await options.metrics.scrape();
    response.writeHead(200, { "content-type": options.metrics.contentType }).end(text);
  } else if (path === "/livez") {
    // Answering at all is the proof: a wedged event loop does not.
    response.writeHead(200, { "content-type": "application/json" }).end('{"live":true}');
  } else if (path === "/readyz") {
    const report = await readinessReport(options.readiness);
    response.writeHead(report.ready ? 200 : 503, { "content-type": "application/json" }).end(JSON.stringify(report));
  } else {
    response.writeHead(404, { "content-type": "text/plain" }).end("not found");
  }
}
