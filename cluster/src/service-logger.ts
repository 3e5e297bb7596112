// Every process's log (pino, docs/decisions/0033): one JSON object per line on stdout, with the level's
// name, an ISO time, the service, the process title, the message and the call's fields. Levels are set per
// service (EDGE_LOG_LEVEL, WORKER_LOG_LEVEL, DIRECTORY_LOG_LEVEL); fields that could hold a secret or a
// user's content are redacted by name; warnings and errors that repeat are rate-limited.
import { pino, type DestinationStream, type Logger as PinoLogger } from "pino";
import { LogRateLimiter, logRateLimitsDefault, type LogRateLimits } from "./log-rate-limiter.ts";
import type { LogFields, Logger } from "./log-lines.ts";
import type { ServiceKind } from "./service-metrics.ts";

export type ServiceLogger = Logger & {
  readonly error: (message: string, fields?: LogFields) => void;
  /** Detail an operator turns on for a while (LOG_LEVEL=debug); off by default, and then costs a call. */
  readonly debug: (message: string, fields?: LogFields) => void;
  /**
   * A logger whose every line also carries `fields`: a request's handler binds its `traceId` once
   * (docs/decisions/0033). It shares its parent's level, output and rate limits.
   */
  readonly child: (fields: LogFields) => ServiceLogger;
};

/** pino's levels, from the most verbose; `silent` writes nothing. */
export const logLevels = ["trace", "debug", "info", "warn", "error", "fatal", "silent"] as const;
export type LogLevel = (typeof logLevels)[number];
export const logLevelDefault: LogLevel = "info";

/**
 * Field names never written as they are: tokens and credentials, a message's text or body, keys (the
 * direct conversation key, signing keys). A belt: no call site passes such a field, and messages do not
 * quote them either.
 */
export const redactedLogFields: readonly string[] = [
  "token",
  "accessToken",
  "refreshToken",
  "authorization",
  "cookie",
  "password",
  "secret",
  "key",
  "privateKey",
  "body",
  "text",
];
export const redactedValue = "[redacted]";

export type LoggerOptions = {
  readonly service: ServiceKind;
  /** The process title (cellwire-edge-1, cellwire-worker-a-1, …), written in every line as `process`. */
  readonly processName: string;
  readonly level?: LogLevel;
  /** Where lines go; default stdout, written synchronously (see createLogger). Tests pass a capturing stream. */
  readonly destination?: DestinationStream;
  readonly rateLimits?: LogRateLimits;
  /** The rate limiter's clock, in ms; default Date.now. */
  readonly now?: () => number;
};

/**
 * The process's logger. Lines go to stdout with synchronous writes (pino.destination({ sync: true })): a
 * line is in the pipe when the call returns, so the `failed to start` line written just before
 * process.exit(1), or the last lines before a crash, are never lost in a buffer. It costs a write(2) per
 * line, which the message path never pays: it does not log per message, and repeats are rate-limited.
 */
export function createLogger(options: LoggerOptions): ServiceLogger {
  const root = pino(
    {
      level: options.level ?? logLevelDefault,
      base: { service: options.service, process: options.processName },
      timestamp: pino.stdTimeFunctions.isoTime,
      formatters: { level: (label) => ({ level: label }) },
      redact: { paths: [...redactedLogFields], censor: redactedValue },
    },
    options.destination ?? pino.destination({ dest: 1, sync: true }),
  );
  const limiter = new LogRateLimiter(options.rateLimits ?? logRateLimitsDefault, options.now ?? Date.now);
  let reportTimer: NodeJS.Timeout | undefined;
  const report = (): void => {
    reportTimer = undefined;
    for (const held of limiter.takeEnded()) {
      const fields = { suppressedLines: held.suppressedLines, windowMs: held.windowMs };
      const message = `${held.suppressedLines} more lines like this were not logged within ${held.windowMs} ms: ${held.sample}`;
      if (held.level === "error") root.error(fields, message);
      else root.warn(fields, message);
    }
    scheduleReport();
  };
  const scheduleReport = (): void => {
    if (reportTimer !== undefined) return;
    const atMs = limiter.nextReportAtMs();
    if (atMs === undefined) return;
    // unref: a pending report never keeps a stopping process alive.
    reportTimer = setTimeout(report, Math.max(0, atMs - (options.now ?? Date.now)())).unref();
  };
  const wrap = (logger: PinoLogger): ServiceLogger => {
    // Warnings and errors repeat by the thousand in an outage; info and debug lines are lifecycle events.
    const limited =
      (level: "warn" | "error") =>
      (message: string, fields?: LogFields): void => {
        if (!logger.isLevelEnabled(level)) return;
        if (!limiter.admit(level, message)) {
          scheduleReport();
          return;
        }
        if (fields === undefined) logger[level](message);
        else logger[level](fields, message);
      };
    return {
      debug: (message, fields) => (fields === undefined ? logger.debug(message) : logger.debug(fields, message)),
      info: (message, fields) => (fields === undefined ? logger.info(message) : logger.info(fields, message)),
      warn: limited("warn"),
      error: limited("error"),
      child: (fields) => wrap(logger.child(fields)),
    };
  };
  return wrap(root);
}
