// Finding nats-server before starting a cluster on it, so that a missing binary is one clear error.
import { describe, expect, it } from "vitest";
import { debianServerBinary, locateNatsServer } from "./nats-server-process.ts";

describe("locateNatsServer", () => {
  it("prefers Debian's path, outside a non-root PATH", () => {
    const present = new Set([debianServerBinary, "/usr/local/bin/nats-server"]);
    expect(locateNatsServer("/usr/local/bin:/usr/bin", (path) => present.has(path))).toBe(debianServerBinary);
  });

  it("else takes the first on PATH, as a shell does", () => {
    const present = new Set(["/opt/nats/nats-server", "/usr/local/bin/nats-server"]);
    expect(locateNatsServer("/usr/bin::/opt/nats:/usr/local/bin", (path) => present.has(path))).toBe("/opt/nats/nats-server");
  });

  it("is undefined when it is not installed", () => {
    expect(locateNatsServer("/usr/bin:/bin", () => false)).toBeUndefined();
    expect(locateNatsServer(undefined, () => false)).toBeUndefined();
  });
});
