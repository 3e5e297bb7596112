// The admin API's config: secure by default (no token, no API), and the token never echoed.
import { describe, expect, it } from "vitest";
import { ConfigError } from "@cellwire/cluster";
import { loadAdminApiConfig } from "./config.ts";

const token = "k".repeat(32);

describe("loadAdminApiConfig", () => {
  it("listens on 127.0.0.1:8090 by default, as the admin NATS user of namespace cellwire", () => {
    const { config, warnings } = loadAdminApiConfig({ ADMIN_TOKEN: token });
    expect({ host: config.host, port: config.port, namespace: config.namespace, natsServers: config.natsServers }).toEqual({
      host: "127.0.0.1",
      port: 8090,
      namespace: "cellwire",
      natsServers: ["127.0.0.1:4222"],
    });
    expect(config.natsAccess.service).toBe("admin");
    expect(config.token.reveal()).toBe(token);
    expect(String(config.token)).toBe("[redacted]");
    expect(config.metricsToken).toBeUndefined();
    expect(warnings).toEqual([]);
  });

  it("reads ADMIN_METRICS_TOKEN, held to the admin token's rules and distinct from it", () => {
    const metricsToken = "m".repeat(32);
    expect(loadAdminApiConfig({ ADMIN_TOKEN: token, ADMIN_METRICS_TOKEN: metricsToken }).config.metricsToken?.reveal()).toBe(metricsToken);
    expect(() => loadAdminApiConfig({ ADMIN_TOKEN: token, ADMIN_METRICS_TOKEN: "m".repeat(31) })).toThrow(/^ADMIN_METRICS_TOKEN must be/);
    expect(() => loadAdminApiConfig({ ADMIN_TOKEN: token, ADMIN_METRICS_TOKEN: token })).toThrow(/must differ from ADMIN_TOKEN/);
  });

  it("refuses to start without ADMIN_TOKEN, or with one shorter than 32 characters, without echoing it", () => {
    expect(() => loadAdminApiConfig({})).toThrow(ConfigError);
    expect(() => loadAdminApiConfig({ ADMIN_TOKEN: "" })).toThrow(/ADMIN_TOKEN is required/);
    const short = "s".repeat(31);
    expect(() => loadAdminApiConfig({ ADMIN_TOKEN: short })).toThrow(/at least|32 to/);
    try {
      loadAdminApiConfig({ ADMIN_TOKEN: `${"z".repeat(40)} with space` });
    } catch (error) {
      expect(String(error)).not.toContain("zzzz");
    }
    expect(() => loadAdminApiConfig({ ADMIN_TOKEN: `${"z".repeat(40)} with space` })).toThrow(ConfigError);
  });

  it("reads ADMIN_HOST, ADMIN_PORT and the NATS settings, and reports unknown ADMIN_ variables", () => {
    const { config, warnings } = loadAdminApiConfig({
      ADMIN_TOKEN: token,
      ADMIN_HOST: "0.0.0.0",
      ADMIN_PORT: "0",
      ADMIN_PROT: "1",
      CELLWIRE_NAMESPACE: "prod",
      CELLWIRE_NATS_SERVERS: "n1:4222,n2:4222",
      CELLWIRE_NATS_USER: "admin",
      CELLWIRE_NATS_PASSWORD: "pw",
    });
    expect([config.host, config.port, config.namespace, config.natsServers, config.natsAccess.user]).toEqual([
      "0.0.0.0",
      0,
      "prod",
      ["n1:4222", "n2:4222"],
      "admin",
    ]);
    expect(warnings).toEqual(["unknown variable ADMIN_PROT (ignored; a typo?)"]);
    expect(() => loadAdminApiConfig({ ADMIN_TOKEN: token, ADMIN_PORT: "65536" })).toThrow(ConfigError);
  });
});
