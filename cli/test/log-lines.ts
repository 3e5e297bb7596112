// Reading the services' log lines as the tests' topology keeps them: `[<process>] <JSON line>` (pino,
// docs/decisions/0033). A line that is not a service's JSON (Node's own warnings, a stack) reads as none.

export type ServiceLogLine = {
  readonly processName: string;
  readonly level: string;
  readonly msg: string;
  readonly fields: Readonly<Record<string, unknown>>;
};

/** The process, level, message and other fields of one output line; undefined for a line that is not a log line. */
export function parseLogLine(line: string): ServiceLogLine | undefined {
  const match = /^\[([^\]]+)\] (\{.*\})$/.exec(line);
  if (match === null) return undefined;
  let parsed: unknown;
  try {
    parsed = JSON.parse(match[2] ?? "");
  } catch {
    return undefined;
  }
  if (typeof parsed !== "object" || parsed === null) return undefined;
  const fields = parsed as Record<string, unknown>;
  const { level, msg } = fields;
  if (typeof level !== "string" || typeof msg !== "string") return undefined;
  return { processName: match[1] ?? "", level, msg, fields };
}

/** A warning or an error (or worse): what a test prints first when it fails. */
export function isWarningOrError(line: string): boolean {
  const level = parseLogLine(line)?.level;
  return level === "warn" || level === "error" || level === "fatal";
}
