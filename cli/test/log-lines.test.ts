import { describe, expect, it } from "vitest";
import { createLogger } from "@cellwire/cluster";
import { isWarningOrError, parseLogLine } from "./log-lines.ts";

/** A line as the tests' topology keeps it: the process's name, then what its logger wrote. */
function outputLine(write: (logger: ReturnType<typeof createLogger>) => void): string {
  let written = "";
  write(createLogger({ service: "worker", processName: "cellwire-worker-a-1", destination: { write: (line) => void (written = line) } }));
  return `[cellwire-worker-a-1] ${written.trimEnd()}`;
}

describe("parseLogLine", () => {
  it("reads the process, level, message and fields of a service's line", () => {
    const line = outputLine((logger) => logger.warn("relay of c-1 failed", { attempts: 2 }));
    expect(parseLogLine(line)).toMatchObject({
      processName: "cellwire-worker-a-1",
      level: "warn",
      msg: "relay of c-1 failed",
      fields: { attempts: 2, service: "worker" },
    });
    expect(isWarningOrError(line)).toBe(true);
    expect(isWarningOrError(outputLine((logger) => logger.info("ready")))).toBe(false);
  });

  it("reads no log line in what is not one", () => {
    for (const line of [
      "[cellwire-edge-1] (node:1) Warning: something",
      "[cellwire-edge-1] {not json}",
      'no prefix {"level":"warn","msg":"x"}',
    ])
      expect(parseLogLine(line)).toBeUndefined();
  });
});
