import { describe, expect, it } from "vitest";
import { EnvironmentReader } from "./config-kit.ts";
import { ConfigError } from "./errors.ts";

describe("EnvironmentReader", () => {
  it("reads a string, falling back when the variable is absent", () => {
    const reader = new EnvironmentReader({ EDGE_HOST: "0.0.0.0" }, ["EDGE_"]);
    expect(reader.string("EDGE_HOST", "127.0.0.1")).toBe("0.0.0.0");
    expect(reader.string("EDGE_ID", "1")).toBe("1");
  });

  it("refuses a string that does not match its pattern, naming the variable", () => {
    const reader = new EnvironmentReader({ CELLWIRE_NAMESPACE: "Bad.Name" }, ["EDGE_"]);
    expect(() => reader.string("CELLWIRE_NAMESPACE", "cellwire", /^[a-z][a-z0-9_]{0,23}$/)).toThrow(ConfigError);
    expect(() => reader.string("CELLWIRE_NAMESPACE", "cellwire", /^[a-z][a-z0-9_]{0,23}$/)).toThrow(/CELLWIRE_NAMESPACE/);
  });

  it("checks the fallback against the pattern too", () => {
    const reader = new EnvironmentReader({}, []);
    expect(() => reader.string("EDGE_ID", "Not Valid", /^[a-z0-9]+$/)).toThrow(ConfigError);
  });

  it("treats an empty optional string as absent", () => {
    const reader = new EnvironmentReader({ EDGE_JWKS_URL: "", EDGE_JWKS_FILE: "/keys.json" }, ["EDGE_"]);
    expect(reader.optionalString("EDGE_JWKS_URL")).toBeUndefined();
    expect(reader.optionalString("EDGE_JWT_ISSUER")).toBeUndefined();
    expect(reader.optionalString("EDGE_JWKS_FILE")).toBe("/keys.json");
  });

  it("reads integers within their range and falls back when absent or empty", () => {
    const reader = new EnvironmentReader({ EDGE_PORT: "8081", EDGE_IDLE_TIMEOUT_MS: "" }, ["EDGE_"]);
    expect(reader.integer("EDGE_PORT", 8080, 0, 65535)).toBe(8081);
    expect(reader.integer("EDGE_IDLE_TIMEOUT_MS", 120_000, 1, 1_000_000)).toBe(120_000);
    expect(reader.integer("EDGE_SESSIONS_MAX", 15_000, 1, 1_000_000)).toBe(15_000);
  });

  it.each(["65536", "-1", "1.5", "eight", "NaN", "Infinity", "9007199254740993"])("refuses the integer %j", (raw) => {
    const reader = new EnvironmentReader({ EDGE_PORT: raw }, ["EDGE_"]);
    expect(() => reader.integer("EDGE_PORT", 8080, 0, 65535)).toThrow(ConfigError);
  });

  it("accepts the bounds of an integer range", () => {
    expect(new EnvironmentReader({ X_N: "0" }, []).integer("X_N", 5, 0, 10)).toBe(0);
    expect(new EnvironmentReader({ X_N: "10" }, []).integer("X_N", 5, 0, 10)).toBe(10);
  });

  it.each([
    ["true", true],
    ["1", true],
    ["false", false],
    ["0", false],
  ] as const)("reads the boolean %j", (raw, expected) => {
    expect(new EnvironmentReader({ X_FLAG: raw }, []).boolean("X_FLAG", !expected)).toBe(expected);
  });

  it("falls back for an absent or empty boolean and refuses anything else", () => {
    expect(new EnvironmentReader({}, []).boolean("X_FLAG", true)).toBe(true);
    expect(new EnvironmentReader({ X_FLAG: "" }, []).boolean("X_FLAG", false)).toBe(false);
    expect(() => new EnvironmentReader({ X_FLAG: "yes" }, []).boolean("X_FLAG", false)).toThrow(ConfigError);
  });

  it("reads one of a set of values", () => {
    const values = ["dev", "jwks"] as const;
    expect(new EnvironmentReader({ EDGE_AUTH_MODE: "jwks" }, []).oneOf("EDGE_AUTH_MODE", "dev", values)).toBe("jwks");
    expect(new EnvironmentReader({ EDGE_AUTH_MODE: "" }, []).oneOf("EDGE_AUTH_MODE", "dev", values)).toBe("dev");
    expect(() => new EnvironmentReader({ EDGE_AUTH_MODE: "JWKS" }, []).oneOf("EDGE_AUTH_MODE", "dev", values)).toThrow(/dev, jwks/);
  });

  it("reports prefixed variables no field read, sorted, and nothing else", () => {
    const reader = new EnvironmentReader(
      { EDGE_PORT: "1", EDGE_PROT: "2", EDGE_AAA: "3", WORKER_ID: "x", PATH: "/bin", CELLWIRE_NAMESPACE: "t" },
      ["EDGE_"],
    );
    reader.integer("EDGE_PORT", 8080, 0, 65535);
    reader.string("CELLWIRE_NAMESPACE", "cellwire");
    expect(reader.unknownVariables()).toEqual(["EDGE_AAA", "EDGE_PROT"]);
  });

  it("counts a variable as read even when it fell back or failed", () => {
    const reader = new EnvironmentReader({ EDGE_PORT: "oops", EDGE_HOST: "h" }, ["EDGE_"]);
    expect(() => reader.integer("EDGE_PORT", 8080, 0, 65535)).toThrow(ConfigError);
    reader.optionalString("EDGE_HOST");
    expect(reader.unknownVariables()).toEqual([]);
  });

  it("checks several prefixes", () => {
    const reader = new EnvironmentReader({ WORKER_X: "1", CELLWIRE_TYPO: "2", OTHER: "3" }, ["WORKER_", "CELLWIRE_"]);
    expect(reader.unknownVariables()).toEqual(["CELLWIRE_TYPO", "WORKER_X"]);
  });
});
