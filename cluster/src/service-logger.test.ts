import { spawnSync } from "node:child_process";
import { fileURLToPath } from "node:url";
import { afterEach, describe, expect, it, vi } from "vitest";
import { createLogger, redactedValue, type LoggerOptions, type ServiceLogger } from "./service-logger.ts";

/** A logger writing into `lines` (each write one line, as pino makes them). */
function capturing(options: Partial<LoggerOptions> = {}): {
  logger: ServiceLogger;
  lines: string[];
  parsed: () => Record<string, unknown>[];
} {
  const lines: string[] = [];
  const logger = createLogger({
    service: "worker",
    processName: "cellwire-worker-a-1",
    destination: { write: (line: string) => void lines.push(line) },
    ...options,
  });
  return { logger, lines, parsed: () => lines.map((line) => JSON.parse(line) as Record<string, unknown>) };
}

afterEach(() => {
  vi.useRealTimers();
});

describe("createLogger", () => {
  it("writes one JSON object per line: level name, ISO time, service, process title, msg and the call's fields", () => {
    const { logger, lines, parsed } = capturing();
    logger.info("worker a-1 of cell a serves cellwire.cell.a.worker.a-1", { cellId: "a", leases: 2, fenced: false, absent: undefined });
    logger.warn("nats reconnect");
    expect(lines).toHaveLength(2);
    for (const line of lines) expect(line).toMatch(/^\{[^\n]*\}\n$/);
    const [first, second] = parsed();
    expect(first).toEqual({
      level: "info",
      time: expect.stringMatching(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/) as unknown,
      service: "worker",
      process: "cellwire-worker-a-1",
      msg: "worker a-1 of cell a serves cellwire.cell.a.worker.a-1",
      cellId: "a",
      leases: 2,
      fenced: false,
    });
    expect(Math.abs(Date.parse(String(first?.["time"])) - Date.now())).toBeLessThan(60_000);
    expect(second).toMatchObject({ level: "warn", msg: "nats reconnect", service: "worker", process: "cellwire-worker-a-1" });
  });

  it("writes only lines at or above its level; debug is off by default", () => {
    const atDefault = capturing();
    atDefault.logger.debug("ring recomputed");
    atDefault.logger.info("ready");
    expect(atDefault.parsed().map((line) => line["level"])).toEqual(["info"]);

    const atWarn = capturing({ level: "warn" });
    atWarn.logger.debug("a");
    atWarn.logger.info("b");
    atWarn.logger.warn("c");
    atWarn.logger.error("d");
    expect(atWarn.parsed().map((line) => `${String(line["level"])} ${String(line["msg"])}`)).toEqual(["warn c", "error d"]);

    const atDebug = capturing({ level: "debug" });
    atDebug.logger.debug("ring recomputed", { ringEpoch: 4 });
    expect(atDebug.parsed()).toEqual([expect.objectContaining({ level: "debug", msg: "ring recomputed", ringEpoch: 4 })]);

    const silent = capturing({ level: "silent" });
    silent.logger.error("nothing");
    expect(silent.lines).toEqual([]);
  });

  it("never writes a token, a body, a text, a password, a secret or a key given as a field, in a child's bindings either", () => {
    const { logger, lines, parsed } = capturing();
    const secrets = {
      token: "eyJhbGciOiJFZERTQSJ9.SENSITIVE-token",
      authorization: "Bearer SENSITIVE-bearer",
      body: "SENSITIVE message body",
      text: "SENSITIVE message text",
      password: "SENSITIVE-password",
      secret: "SENSITIVE-value",
      key: "SENSITIVE-direct-conversation-key",
    };
    logger.warn("a hello was refused", { ...secrets, userId: "alice" });
    logger.child({ token: "SENSITIVE-bound-token", traceId: "4bf92f3577b34da6a3ce929d0e0e4736" }).info("bound");
    for (const line of lines) expect(line).not.toContain("SENSITIVE");
    const [refused, bound] = parsed();
    expect(refused).toMatchObject({
      msg: "a hello was refused",
      userId: "alice",
      token: redactedValue,
      authorization: redactedValue,
      body: redactedValue,
      text: redactedValue,
      password: redactedValue,
      secret: redactedValue,
      key: redactedValue,
    });
    expect(bound).toMatchObject({ msg: "bound", token: redactedValue, traceId: "4bf92f3577b34da6a3ce929d0e0e4736" });
  });

  it("binds fields on a child (a request's traceId) without changing its parent", () => {
    const { logger, parsed } = capturing();
    const request = logger.child({ traceId: "4bf92f3577b34da6a3ce929d0e0e4736" });
    request.info("cell.sendBatch stored", { sends: 3 });
    request.child({ cellId: "b" }).error("relay failed");
    logger.info("no trace here");
    const [stored, failed, plain] = parsed();
    expect(stored).toMatchObject({ msg: "cell.sendBatch stored", traceId: "4bf92f3577b34da6a3ce929d0e0e4736", sends: 3 });
    expect(failed).toMatchObject({ level: "error", msg: "relay failed", traceId: "4bf92f3577b34da6a3ce929d0e0e4736", cellId: "b" });
    expect(plain).not.toHaveProperty("traceId");
    expect(plain).toMatchObject({ service: "worker", process: "cellwire-worker-a-1" });
  });

  it("rate-limits repeated warnings and errors, then says how many it held back once the window ends", () => {
    vi.useFakeTimers({ now: Date.parse("2026-12-06T18:00:00.000Z") });
    const { logger, parsed } = capturing({ rateLimits: { linesPerWindowMax: 10, windowMs: 10_000, templatesMax: 100 } });
    for (let attempt = 0; attempt < 25; attempt++) logger.error(`storing a batch of ${attempt} sends failed`, { attempt });
    for (let attempt = 0; attempt < 12; attempt++) logger.info(`lease renewed ${attempt}`);
    logger.warn("nats reconnect");
    const inWindow = parsed();
    expect(inWindow.filter((line) => line["level"] === "error")).toHaveLength(10);
    // Info lines are not limited; another template has its own budget.
    expect(inWindow.filter((line) => line["level"] === "info")).toHaveLength(12);
    expect(inWindow.filter((line) => line["msg"] === "nats reconnect")).toHaveLength(1);
    vi.advanceTimersByTime(9_999);
    expect(parsed()).toHaveLength(inWindow.length);
    vi.advanceTimersByTime(1);
    const reports = parsed().slice(inWindow.length);
    expect(reports).toEqual([
      expect.objectContaining({
        level: "error",
        msg: "15 more lines like this were not logged within 10000 ms: storing a batch of 0 sends failed",
        suppressedLines: 15,
        windowMs: 10_000,
      }),
    ]);
    logger.error("storing a batch of 99 sends failed");
    expect(parsed().at(-1)).toMatchObject({ msg: "storing a batch of 99 sends failed" });
  });

  it("writes to stdout synchronously: the failed-start line is there when the process exits at once", () => {
    const script = [
      `import { createLogger, failStart } from ${JSON.stringify(fileURLToPath(new URL("./index.ts", import.meta.url)))};`,
      `const logger = createLogger({ service: "edge", processName: "cellwire-edge-9" });`,
      `for (let index = 0; index < 200; index++) logger.info("filler line " + index + " " + "x".repeat(200));`,
      `failStart("cellwire-edge-9", logger, new Error("EDGE_PORT is in use"));`,
    ].join("\n");
    const run = spawnSync(process.execPath, ["--import", "tsx", "--input-type=module", "--eval", script], {
      encoding: "utf8",
      timeout: 60_000,
    });
    expect(run.status).toBe(1);
    const lines = run.stdout.trimEnd().split("\n");
    expect(lines).toHaveLength(201);
    expect(JSON.parse(lines.at(-1) ?? "")).toMatchObject({
      level: "error",
      service: "edge",
      process: "cellwire-edge-9",
      msg: "failed to start: EDGE_PORT is in use",
    });
  });
});
