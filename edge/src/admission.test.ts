// Admission at the door, without a socket: the Origin allowlist, the client address behind trusted
// proxies, the sockets per address and the unauthenticated budget, and the refusal counters.
import { describe, expect, it } from "vitest";
import {
  Admission,
  canonicalAddress,
  isLoopbackHost,
  parseAllowedOrigin,
  parseTrustedProxy,
  type AdmissionOptions,
  type UpgradeRequest,
} from "./admission.ts";

const jwksDefaults: AdmissionOptions = {
  allowedOrigins: [],
  loopbackOriginsAllowed: false,
  connectionsPerAddressMax: 100,
  unauthenticatedMax: 1000,
  trustedProxies: [],
};

function admission(options: Partial<AdmissionOptions> = {}, unauthenticated = { count: 0 }): Admission {
  return new Admission({ ...jwksDefaults, ...options }, () => unauthenticated.count);
}

function request(overrides: Partial<UpgradeRequest> = {}): UpgradeRequest {
  return { peerAddress: "203.0.113.5", proxiedAddress: "", origin: "", forwardedFor: "", ...overrides };
}

describe("the Origin allowlist", () => {
  it("admits a client without Origin (an SDK outside a browser) and refuses every browser origin by default in jwks mode", () => {
    const door = admission();
    expect(door.decide(request()).admitted).toBe(true);
    expect(door.decide(request({ origin: "https://evil.example" }))).toMatchObject({ admitted: false, refusal: "origin_not_allowed" });
    expect(door.decide(request({ origin: "http://localhost:3000" }))).toMatchObject({ admitted: false, refusal: "origin_not_allowed" });
    expect(door.decide(request({ origin: "null" }))).toMatchObject({ admitted: false, refusal: "origin_not_allowed" });
    expect(door.refusals.origin_not_allowed).toBe(3);
  });

  it("admits exactly the listed origins, whatever their case", () => {
    const door = admission({ allowedOrigins: ["https://app.example.com"] });
    expect(door.decide(request({ origin: "https://app.example.com" })).admitted).toBe(true);
    expect(door.decide(request({ origin: "https://APP.example.com" })).admitted).toBe(true);
    expect(door.decide(request({ origin: "http://app.example.com" })).admitted).toBe(false);
    expect(door.decide(request({ origin: "https://app.example.com:8443" })).admitted).toBe(false);
    expect(door.decide(request({ origin: "https://app.example.com.evil.example" })).admitted).toBe(false);
  });

  it("admits any origin with *", () => {
    expect(admission({ allowedOrigins: ["*"] }).decide(request({ origin: "https://anywhere.example" })).admitted).toBe(true);
  });

  it("admits loopback pages in dev mode's default, and no other", () => {
    const door = admission({ loopbackOriginsAllowed: true });
    for (const origin of ["http://127.0.0.1:8080", "http://localhost:5173", "https://[::1]:8443", "http://app.localhost"]) {
      expect(door.decide(request({ origin })).admitted, origin).toBe(true);
    }
    for (const origin of ["http://192.168.1.10:8080", "https://localhost.evil.example", "not a url", "file://localhost"]) {
      expect(door.decide(request({ origin })).admitted, origin).toBe(false);
    }
  });
});

describe("sockets per client address", () => {
  it("refuses the address's socket past the maximum, counts it, and admits it again once one closes", () => {
    const door = admission({ connectionsPerAddressMax: 2 });
    for (let index = 0; index < 2; index++) {
      const decision = door.decide(request());
      expect(decision).toEqual({ admitted: true, clientAddress: "203.0.113.5" });
      door.connected(decision.clientAddress);
    }
    expect(door.decide(request())).toEqual({ admitted: false, refusal: "too_many_connections_from_address", clientAddress: "203.0.113.5" });
    // Another address is not affected.
    expect(door.decide(request({ peerAddress: "203.0.113.6" })).admitted).toBe(true);
    door.disconnected("203.0.113.5");
    expect(door.decide(request()).admitted).toBe(true);
    expect(door.refusals.too_many_connections_from_address).toBe(1);
  });

  it("forgets an address with its last socket, so the map is bounded by the open sockets", () => {
    const door = admission();
    door.connected("203.0.113.5");
    door.disconnected("203.0.113.5");
    door.disconnected("203.0.113.5");
    expect(door.connectionsFrom("203.0.113.5")).toBe(0);
  });

  it("counts an IPv4 client of a dual-stack socket under its IPv4 address, as uWS spells it", () => {
    const door = admission({ connectionsPerAddressMax: 1 });
    door.connected("203.0.113.5");
    expect(door.decide(request({ peerAddress: "::ffff:203.0.113.5" }))).toMatchObject({ admitted: false, clientAddress: "203.0.113.5" });
    // What uWS's getRemoteAddressAsText gives for 127.0.0.1 on a socket listening on "::".
    expect(door.decide(request({ peerAddress: "0000:0000:0000:0000:0000:ffff:cb00:7105" }))).toMatchObject({
      admitted: false,
      clientAddress: "203.0.113.5",
    });
  });

  it("counts one IPv6 client under one key, however its address is written", () => {
    const door = admission({ connectionsPerAddressMax: 1 });
    const decision = door.decide(request({ peerAddress: "2001:0DB8:0000:0000:0000:0000:0000:0005" }));
    expect(decision).toEqual({ admitted: true, clientAddress: "2001:db8::5" });
    door.connected(decision.clientAddress);
    expect(door.decide(request({ peerAddress: "2001:db8::5" })).admitted).toBe(false);
  });
});

describe("the client address behind proxies", () => {
  it("ignores X-Forwarded-For from a peer that is not a trusted proxy (anyone can write it)", () => {
    const door = admission({ trustedProxies: ["10.0.0.0/8"] });
    expect(door.decide(request({ peerAddress: "203.0.113.5", forwardedFor: "198.51.100.1" })).clientAddress).toBe("203.0.113.5");
    expect(admission().decide(request({ peerAddress: "10.0.0.2", forwardedFor: "198.51.100.1" })).clientAddress).toBe("10.0.0.2");
  });

  it("takes the nearest untrusted address from a trusted proxy's X-Forwarded-For, not the client-written left end", () => {
    const door = admission({ trustedProxies: ["10.0.0.0/8", "192.168.1.7"] });
    expect(door.decide(request({ peerAddress: "10.0.0.2", forwardedFor: "198.51.100.1" })).clientAddress).toBe("198.51.100.1");
    expect(door.decide(request({ peerAddress: "10.0.0.2", forwardedFor: "1.2.3.4, 198.51.100.1, 192.168.1.7" })).clientAddress).toBe(
      "198.51.100.1",
    );
    // Every hop trusted: the farthest one is the best guess.
    expect(door.decide(request({ peerAddress: "10.0.0.2", forwardedFor: "10.1.1.1,10.2.2.2" })).clientAddress).toBe("10.1.1.1");
    // Garbage stops the walk at the last address that was read.
    expect(door.decide(request({ peerAddress: "10.0.0.2", forwardedFor: "198.51.100.1, unknown" })).clientAddress).toBe("10.0.0.2");
    // Without the header the proxy itself is the client.
    expect(door.decide(request({ peerAddress: "10.0.0.2" })).clientAddress).toBe("10.0.0.2");
  });

  it("limits the forwarded client, not the proxy all clients share", () => {
    const door = admission({ trustedProxies: ["10.0.0.2"], connectionsPerAddressMax: 1 });
    const first = door.decide(request({ peerAddress: "10.0.0.2", forwardedFor: "198.51.100.1" }));
    door.connected(first.clientAddress);
    expect(door.decide(request({ peerAddress: "10.0.0.2", forwardedFor: "198.51.100.1" })).admitted).toBe(false);
    expect(door.decide(request({ peerAddress: "10.0.0.2", forwardedFor: "198.51.100.2" })).admitted).toBe(true);
  });

  it("reads IPv6 proxies and clients", () => {
    const door = admission({ trustedProxies: ["fd00::/8"] });
    expect(door.decide(request({ peerAddress: "fd00::1", forwardedFor: "2001:db8::5" })).clientAddress).toBe("2001:db8::5");
  });
});

describe("the client address from a PROXY protocol v2 header", () => {
  it("takes the source a trusted proxy's PROXY header named, before any X-Forwarded-For, and ignores anyone else's", () => {
    const door = admission({ trustedProxies: ["10.0.0.2"] });
    expect(door.decide(request({ peerAddress: "10.0.0.2", proxiedAddress: "198.51.100.1" })).clientAddress).toBe("198.51.100.1");
    // X-Forwarded-For came through the proxy from the client (a proxy in TCP mode passes the bytes as they are).
    expect(door.decide(request({ peerAddress: "10.0.0.2", proxiedAddress: "198.51.100.1", forwardedFor: "1.2.3.4" })).clientAddress).toBe(
      "198.51.100.1",
    );
    // Anyone can write a header: from a peer that is not a trusted proxy, or with no proxy trusted, it is not read.
    expect(door.decide(request({ peerAddress: "203.0.113.5", proxiedAddress: "198.51.100.1" })).clientAddress).toBe("203.0.113.5");
    expect(admission().decide(request({ peerAddress: "10.0.0.2", proxiedAddress: "198.51.100.1" })).clientAddress).toBe("10.0.0.2");
    // A header that named no source (LOCAL, as haproxy's health checks send) leaves the proxy's own address.
    expect(door.decide(request({ peerAddress: "10.0.0.2", proxiedAddress: "" })).clientAddress).toBe("10.0.0.2");
    expect(door.decide(request({ peerAddress: "10.0.0.2", proxiedAddress: "not an address" })).clientAddress).toBe("10.0.0.2");
  });

  it("walks X-Forwarded-For on when the PROXY source is itself a trusted proxy (another balancer in front of the one the edge sees)", () => {
    const door = admission({ trustedProxies: ["10.0.0.2", "192.168.1.7"] });
    expect(
      door.decide(request({ peerAddress: "10.0.0.2", proxiedAddress: "192.168.1.7", forwardedFor: "1.2.3.4, 198.51.100.1" })).clientAddress,
    ).toBe("198.51.100.1");
    // Without the header, the balancer the PROXY header named is the best guess, as the proxy is for X-Forwarded-For.
    expect(door.decide(request({ peerAddress: "10.0.0.2", proxiedAddress: "192.168.1.7" })).clientAddress).toBe("192.168.1.7");
  });

  it("writes the proxied address one way: uWS gives IPv6 in full, and IPv4 clients of IPv6 proxies mapped", () => {
    const door = admission({ trustedProxies: ["10.0.0.2"] });
    const full = "2001:0db8:0000:0000:0000:0000:0000:0005";
    expect(door.decide(request({ peerAddress: "10.0.0.2", proxiedAddress: full })).clientAddress).toBe("2001:db8::5");
    const mapped = "0000:0000:0000:0000:0000:ffff:c633:6401";
    expect(door.decide(request({ peerAddress: "10.0.0.2", proxiedAddress: mapped })).clientAddress).toBe("198.51.100.1");
  });

  it("limits each proxied client on its own, not the proxy all of them share", () => {
    const door = admission({ trustedProxies: ["10.0.0.2"], connectionsPerAddressMax: 1 });
    door.connected(door.decide(request({ peerAddress: "10.0.0.2", proxiedAddress: "198.51.100.1" })).clientAddress);
    expect(door.decide(request({ peerAddress: "10.0.0.2", proxiedAddress: "198.51.100.1" }))).toMatchObject({
      admitted: false,
      refusal: "too_many_connections_from_address",
      clientAddress: "198.51.100.1",
    });
    expect(door.decide(request({ peerAddress: "10.0.0.2", proxiedAddress: "198.51.100.2" })).admitted).toBe(true);
  });
});

describe("the unauthenticated budget", () => {
  it("refuses a socket while the edge holds its maximum of sockets that have not authenticated, and admits once one leaves it", () => {
    const unauthenticated = { count: 2 };
    const door = admission({ unauthenticatedMax: 2 }, unauthenticated);
    expect(door.decide(request())).toMatchObject({ admitted: false, refusal: "unauthenticated_full" });
    unauthenticated.count = 1;
    expect(door.decide(request()).admitted).toBe(true);
    expect(door.refusals).toEqual({ origin_not_allowed: 0, too_many_connections_from_address: 0, unauthenticated_full: 1 });
  });
});

describe("parsing the settings", () => {
  it("reads origins as browsers send them", () => {
    expect(parseAllowedOrigin("https://App.Example.com")).toBe("https://app.example.com");
    expect(parseAllowedOrigin("https://app.example.com:443")).toBe("https://app.example.com");
    expect(parseAllowedOrigin("http://localhost:3000")).toBe("http://localhost:3000");
    expect(parseAllowedOrigin("*")).toBe("*");
    for (const bad of [
      "app.example.com",
      "https://app.example.com/",
      "https://app.example.com/x",
      "https://u:p@app.example.com",
      "ws://app.example.com",
    ]) {
      expect(parseAllowedOrigin(bad), bad).toBeUndefined();
    }
  });

  it("reads proxies as addresses or CIDR blocks", () => {
    for (const good of ["10.0.0.1", "10.0.0.0/8", "::1", "fd00::/8", "0.0.0.0/0"]) expect(parseTrustedProxy(good), good).toBe(good);
    for (const bad of ["10.0.0.0/33", "fd00::/129", "10.0.0.0/x", "proxy", "10.0.0.0/8/1", ""])
      expect(parseTrustedProxy(bad), bad).toBeUndefined();
  });

  it("writes each address one way", () => {
    expect(canonicalAddress("0000:0000:0000:0000:0000:0000:0000:0001")).toBe("::1");
    expect(canonicalAddress("0000:0000:0000:0000:0000:ffff:7f00:0001")).toBe("127.0.0.1");
    expect(canonicalAddress("::ffff:10.1.2.3")).toBe("10.1.2.3");
    expect(canonicalAddress("FD00::0001")).toBe("fd00::1");
    expect(canonicalAddress("198.51.100.1")).toBe("198.51.100.1");
    expect(canonicalAddress("unknown")).toBe("unknown");
  });

  it("knows loopback hosts", () => {
    for (const host of [
      "127.0.0.1",
      "127.1.2.3",
      "::1",
      "[::1]",
      "localhost",
      "::ffff:127.0.0.1",
      "0000:0000:0000:0000:0000:0000:0000:0001",
    ])
      expect(isLoopbackHost(host), host).toBe(true);
    for (const host of ["0.0.0.0", "::", "10.0.0.1", "example.com", "localhost.example.com"])
      expect(isLoopbackHost(host), host).toBe(false);
  });
});
