import { describe, expect, it } from "vitest";
import { createLogger } from "@cellwire/cluster";
import { createLogLinePrinter } from "./log-line-printer.ts";

/** What a service writes, made by the services' own logger. */
function serviceLines(write: (logger: ReturnType<typeof createLogger>) => void): string[] {
  const lines: string[] = [];
  write(
    createLogger({ service: "edge", processName: "cellwire-edge-1", destination: { write: (line) => void lines.push(line.trimEnd()) } }),
  );
  return lines;
}

describe("createLogLinePrinter: npm start's view of the services' JSON lines", () => {
  const print = createLogLinePrinter({ colorize: false });

  it("shows time, level, message and fields on one line, without the service and process the prefix already names", () => {
    const [line] = serviceLines((logger) => logger.warn("nats reconnect", { cellId: "a", attempts: 3 }));
    const shown = print(line ?? "");
    expect(shown).toMatch(/^\[\d\d:\d\d:\d\d\.\d{3}\] WARN: nats reconnect \{"cellId":"a","attempts":3\}$/);
    expect(shown).not.toContain("cellwire-edge-1");
    expect(shown).not.toContain('"service"');
  });

  it("keeps one event on one line, even a message that has newlines in it (a stack)", () => {
    const [line] = serviceLines((logger) =>
      logger.error("request failed: Error: boom\n    at handle (edge.ts:1:1)\n    at run (edge.ts:2:2)"),
    );
    const shown = print(line ?? "");
    expect(shown.split("\n")).toHaveLength(1);
    expect(shown).toMatch(/ERROR: request failed: Error: boom\\n {4}at handle \(edge\.ts:1:1\)\\n {4}at run/);
  });

  it("prints a line that is not a JSON object as it came", () => {
    for (const line of ["node:internal/process: warning", "", "{ not json", "[1,2]"]) expect(print(line)).toBe(line);
  });

  it("colours the level when asked to (a terminal)", () => {
    const [line] = serviceLines((logger) => logger.error("x"));
    expect(createLogLinePrinter({ colorize: true })(line ?? "")).toContain("\u001b[31mERROR");
  });
});
