// How `cellwire up` (npm start) shows its processes' log lines: the services write JSON (pino,
// docs/decisions/0033); a person at a terminal reads `[18:30:01.123] WARN: nats reconnect {"cellId":"a"}`
// instead, still one line per event, since the launcher prefixes each line with its process's name. A line
// that is not JSON (a stack trace Node printed, a library's own output) is shown as it came.
import { prettyFactory } from "pino-pretty";

export type LogLinePrinterOptions = { readonly colorize: boolean };

/** Turns one line a service printed into the line to show; never more than one line. */
export function createLogLinePrinter(options: LogLinePrinterOptions): (line: string) => string {
  const prettify = prettyFactory({
    singleLine: true,
    colorize: options.colorize,
    // The launcher's prefix already names the process; the service is in its name.
    ignore: "service,process",
    translateTime: "SYS:HH:MM:ss.l",
  });
  return (line) => {
    if (!line.startsWith("{")) return line;
    // pino-pretty ends a line with a newline and keeps the ones inside a message (an error's stack): each
    // becomes a visible \n, so one event stays one line.
    return prettify(line)
      .replace(/\r?\n$/, "")
      .replace(/\r?\n/g, "\\n");
  };
}
