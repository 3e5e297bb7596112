import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { inspect } from "node:util";
import { describe, expect, it } from "vitest";
import { EnvironmentReader } from "./config-kit.ts";
import { ConfigError } from "./errors.ts";
import { natsConnectOptions, readNatsAccess } from "./nats-access.ts";

const read = (environment: Record<string, string>) => readNatsAccess(new EnvironmentReader(environment, []), "edge");

describe("readNatsAccess", () => {
  it("connects anonymously by default, under the service's own inbox prefix", async () => {
    const access = read({});
    expect(access).toEqual({ service: "edge", inboxPrefix: "_INBOX.edge" });
    expect(await natsConnectOptions(access)).toEqual({ inboxPrefix: "_INBOX.edge" });
  });

  it("takes the password from the environment and never prints it, in a log line, JSON or util.inspect", async () => {
    const access = read({ CELLWIRE_NATS_USER: "edge", CELLWIRE_NATS_PASSWORD: "hunter2-secret" });
    for (const printed of [
      String(access.password),
      JSON.stringify(access),
      inspect(access, { depth: 5 }),
      `${JSON.stringify({ config: access })}`,
    ]) {
      expect(printed).not.toContain("hunter2-secret");
    }
    expect(await natsConnectOptions(access)).toEqual({ inboxPrefix: "_INBOX.edge", user: "edge", pass: "hunter2-secret" });
  });

  it("reads the password from a file at connect, one line, and names no contents in its errors", async () => {
    const directory = await mkdtemp(join(tmpdir(), "cellwire-nats-access-"));
    try {
      const file = join(directory, "password");
      await writeFile(file, "from-a-file\n");
      const access = read({ CELLWIRE_NATS_USER: "edge", CELLWIRE_NATS_PASSWORD_FILE: file });
      expect(JSON.stringify(access)).not.toContain("from-a-file");
      expect(await natsConnectOptions(access)).toMatchObject({ user: "edge", pass: "from-a-file" });
      await writeFile(file, "two\nlines-secret\n");
      const error = await natsConnectOptions(access).catch((caught: unknown) => caught);
      expect(error).toBeInstanceOf(ConfigError);
      expect(String(error)).not.toContain("lines-secret");
      await expect(
        natsConnectOptions(read({ CELLWIRE_NATS_USER: "edge", CELLWIRE_NATS_PASSWORD_FILE: join(directory, "missing") })),
      ).rejects.toThrow("ENOENT");
    } finally {
      await rm(directory, { recursive: true, force: true });
    }
  });

  it("passes TLS files to nats.js and refuses half-given credentials or certificates", async () => {
    const access = read({
      CELLWIRE_NATS_TLS_CA_FILE: "/ca.pem",
      CELLWIRE_NATS_TLS_CERT_FILE: "/cert.pem",
      CELLWIRE_NATS_TLS_KEY_FILE: "/key.pem",
    });
    expect(await natsConnectOptions(access)).toEqual({
      inboxPrefix: "_INBOX.edge",
      tls: { caFile: "/ca.pem", certFile: "/cert.pem", keyFile: "/key.pem" },
    });
    expect(() => read({ CELLWIRE_NATS_USER: "edge" })).toThrow(ConfigError);
    expect(() => read({ CELLWIRE_NATS_PASSWORD: "x" })).toThrow(ConfigError);
    expect(() => read({ CELLWIRE_NATS_USER: "edge", CELLWIRE_NATS_PASSWORD: "x", CELLWIRE_NATS_PASSWORD_FILE: "/p" })).toThrow("not both");
    expect(() => read({ CELLWIRE_NATS_TLS_CERT_FILE: "/cert.pem" })).toThrow(ConfigError);
    expect(() => read({ CELLWIRE_NATS_USER: "edge.>", CELLWIRE_NATS_PASSWORD: "x" })).toThrow(ConfigError);
  });
});
