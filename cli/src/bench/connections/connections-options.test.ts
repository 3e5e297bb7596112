import { describe, expect, it } from "vitest";
import { parseConnectionsOptions, type ParsedOptions } from "./connections-options.ts";

const now = new Date(2026, 11, 6, 12);

function message(parsed: ParsedOptions): string {
  return parsed.ok ? "" : parsed.message;
}

describe("the connections bench's options", () => {
  it("default to every measurement: 5,000 sockets, 10,000 connects, 6,000 clients for the kill, over 2 load processes", () => {
    expect(parseConnectionsOptions([], now)).toEqual({
      ok: true,
      options: {
        measurements: ["memory", "connects", "kill"],
        sockets: 5000,
        connects: 10_000,
        inFlightPerProcess: 50,
        users: 6000,
        resyncDeadlineS: 30,
        loadProcesses: 2,
        tokens: "dev",
        resultsPath: "bench/results/2026-12-06-connections.md",
        profileDirectory: undefined,
        heapSnapshotDirectory: undefined,
        postgresAdminUrl: "postgres://postgres@127.0.0.1:5432/postgres",
      },
    });
  });

  it("runs the measurements named, always in the order memory, connects, kill (kill leaves edge 1 dead)", () => {
    const parsed = parseConnectionsOptions(["--measurements", "kill,memory"], now);
    expect(parsed.ok && parsed.options.measurements).toEqual(["memory", "kill"]);
    expect(message(parseConnectionsOptions(["--measurements", "memory,speed"], now))).toMatch(
      /--measurements takes memory, connects, kill, not "speed"/,
    );
    expect(message(parseConnectionsOptions(["--measurements", "kill,kill"], now))).toMatch(/names one twice/);
  });

  it("refuses more sockets, connects or clients than the load processes may hold (20,000 open files each)", () => {
    expect(parseConnectionsOptions(["--users", "10000"], now).ok).toBe(true);
    expect(message(parseConnectionsOptions(["--users", "10001", "--load-processes", "2"], now))).toMatch(
      /--users 10001 is more than 2 load processes hold \(at most 5000 per load process/,
    );
    expect(message(parseConnectionsOptions(["--sockets", "20001"], now))).toMatch(/--sockets 20001/);
    expect(message(parseConnectionsOptions(["--connects", "0"], now))).toMatch(/--connects takes a whole number from 1/);
  });

  it("signs dev tokens unless an algorithm of a production JWKS is named", () => {
    const parsed = parseConnectionsOptions(["--tokens", "RS256"], now);
    expect(parsed.ok && parsed.options.tokens).toBe("RS256");
    expect(message(parseConnectionsOptions(["--tokens", "HS256"], now))).toMatch(
      /--tokens takes dev, ES256, RS256, PS256, EdDSA, not "HS256"/,
    );
  });

  it("refuses malformed numbers, unknown options and a postgres URL of another scheme", () => {
    expect(message(parseConnectionsOptions(["--in-flight", "5x"], now))).toMatch(/--in-flight takes a whole number/);
    expect(message(parseConnectionsOptions(["--speed", "3"], now))).toMatch(/speed/);
    expect(message(parseConnectionsOptions(["--postgres-admin-url", "mysql://x/y"], now))).toMatch(/postgres:\/\//);
    expect(message(parseConnectionsOptions(["extra"], now))).toMatch(/unexpected argument "extra"/);
  });
});
