import { describe, expect, it } from "vitest";
import { parseBenchOptions, type ParsedOptions } from "./bench-options.ts";

const now = new Date(2026, 11, 6, 12);

function message(parsed: ParsedOptions): string {
  return parsed.ok ? "" : parsed.message;
}

describe("the chat bench's options", () => {
  it("default to the grid, 30 s windows after 5 s of warm-up, 1000 users over 2 load processes", () => {
    const parsed = parseBenchOptions(["--group", "2"], now);
    expect(parsed).toEqual({
      ok: true,
      options: {
        group: 2,
        rates: [25, 50, 100, 200, 400, 800, 1600, 3200, 6400, 12_800, 25_600],
        explicitRates: false,
        durationS: 30,
        warmupS: 5,
        users: 1000,
        loadProcesses: 2,
        bodyBytes: 100,
        peer: undefined,
        resultsPath: "bench/results/2026-12-06-chat-group2.md",
        profileDirectory: undefined,
        postgresAdminUrl: "postgres://postgres@127.0.0.1:5432/postgres",
        natsServers: ["127.0.0.1:4222"],
        natsMonitorUrl: undefined,
        keepGoing: false,
      },
    });
  });

  it("take every option", () => {
    const parsed = parseBenchOptions(
      [
        "--group",
        "10",
        "--rates",
        "25,50.5",
        "--duration",
        "3",
        "--warmup",
        "0",
        "--users",
        "20",
        "--load-processes",
        "1",
        "--body-bytes",
        "64",
        "--peer",
        "socketio",
        "--results",
        "/tmp/r.md",
        "--profile",
        "/tmp/p",
        "--postgres-admin-url",
        "postgresql://u@h/db",
        "--nats-servers",
        "127.0.0.1:4333,127.0.0.1:4334",
        "--nats-monitor-url",
        "http://127.0.0.1:8333/",
        "--keep-going",
      ],
      now,
    );
    expect(parsed).toMatchObject({
      ok: true,
      options: {
        group: 10,
        rates: [25, 50.5],
        explicitRates: true,
        durationS: 3,
        warmupS: 0,
        users: 20,
        loadProcesses: 1,
        bodyBytes: 64,
        peer: "socketio",
        resultsPath: "/tmp/r.md",
        profileDirectory: "/tmp/p",
        natsServers: ["127.0.0.1:4333", "127.0.0.1:4334"],
        natsMonitorUrl: "http://127.0.0.1:8333",
        keepGoing: true,
      },
    });
  });

  it("reject bad values with a message naming the option", () => {
    expect(message(parseBenchOptions([], now))).toMatch(/--group is required/);
    expect(message(parseBenchOptions(["--group", "1"], now))).toMatch(/--group takes a whole number from 2 to 1000/);
    expect(message(parseBenchOptions(["--group", "1001"], now))).toMatch(/--group/);
    expect(message(parseBenchOptions(["--group", "10", "--users", "5"], now))).toMatch(/--users takes a whole number from 10/);
    expect(message(parseBenchOptions(["--group", "2", "--rates", "50,25"], now))).toMatch(/--rates must rise/);
    expect(message(parseBenchOptions(["--group", "2", "--rates", "25,x"], now))).toMatch(/--rates takes sends per second/);
    expect(message(parseBenchOptions(["--group", "2", "--rates", "0"], now))).toMatch(/--rates/);
    expect(message(parseBenchOptions(["--group", "2", "--duration", "0"], now))).toMatch(/--duration takes seconds above 0/);
    expect(message(parseBenchOptions(["--group", "2", "--body-bytes", "10"], now))).toMatch(/--body-bytes/);
    expect(message(parseBenchOptions(["--group", "2", "--peer", "kafka"], now))).toMatch(/--peer takes socketio/);
    expect(message(parseBenchOptions(["--group", "2", "--postgres-admin-url", "redis://x"], now))).toMatch(/postgres:\/\//);
    expect(message(parseBenchOptions(["--group", "2", "--users", "3", "--load-processes", "3"], now))).toMatch(
      /more than the 2 users in conversations/,
    );
    expect(message(parseBenchOptions(["--group", "2", "--nats-servers", "nats://127.0.0.1:4222"], now))).toMatch(
      /--nats-servers takes host:port/,
    );
    expect(message(parseBenchOptions(["--group", "2", "--nats-monitor-url", "https://127.0.0.1:8222"], now))).toMatch(
      /--nats-monitor-url must be an http:\/\/ URL/,
    );
    expect(message(parseBenchOptions(["--group", "2", "--frobnicate"], now))).toMatch(/frobnicate/);
    expect(message(parseBenchOptions(["--group", "2", "extra"], now))).toMatch(/unexpected argument "extra"/);
  });
});
