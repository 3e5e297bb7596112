// What every package logs through: the two levels a library part needs and a line's structured fields.
// The processes' logger (service-logger.ts) adds error and debug; pino writes the lines.

/**
 * Structured context for a log line: ids the server made (traceId, workerId, cellId), counts, codes.
 * Never a token, a message body, a key or a user's content (docs/decisions/0033).
 */
export type LogFields = Readonly<Record<string, string | number | boolean | undefined>>;

export type Logger = {
  readonly info: (message: string, fields?: LogFields) => void;
  readonly warn: (message: string, fields?: LogFields) => void;
};
