// Admission at the door: who may open a WebSocket, decided at the upgrade, before a session (and its
// auth timer) exists. Pure but for its counters: the server passes in what it read from the request and
// reports each socket's open and close. Runs once per connection, never per frame.
import { BlockList, isIP } from "node:net";
import type { UpgradeRefusal } from "@cellwire/protocol";

export type AdmissionOptions = {
  /** Exact origins (scheme://host[:port]) or `*`; see EdgeAdmissionConfig. */
  readonly allowedOrigins: readonly string[];
  readonly loopbackOriginsAllowed: boolean;
  readonly connectionsPerAddressMax: number;
  readonly unauthenticatedMax: number;
  /** Addresses or CIDR blocks, as parseTrustedProxy accepts them. */
  readonly trustedProxies: readonly string[];
};

/** What the server read from one upgrade request; headers are "" when absent (as uWS returns them). */
export type UpgradeRequest = {
  /** The TCP peer, as uWS gives it: still the socket's peer when a PROXY header came (tried, uWS 20.30). */
  readonly peerAddress: string;
  /**
   * The source a PROXY protocol v2 header named (uWS's getProxiedRemoteAddressAsText), "" when none came or
   * it named none (a LOCAL header of family UNSPEC, as haproxy's health checks send). Anyone can send one:
   * it counts only from a trusted proxy.
   */
  readonly proxiedAddress: string;
  readonly origin: string;
  readonly forwardedFor: string;
};

export type AdmissionDecision =
  | { readonly admitted: true; readonly clientAddress: string }
  | { readonly admitted: false; readonly refusal: UpgradeRefusal; readonly clientAddress: string };

/** Accepts `*` or an http(s) origin without path, query or credentials; returns it serialised as browsers send it. */
export function parseAllowedOrigin(text: string): string | undefined {
  if (text === "*") return text;
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    return undefined;
  }
  if (url.protocol !== "http:" && url.protocol !== "https:") return undefined;
  if (url.username !== "" || url.password !== "" || url.search !== "" || url.hash !== "" || url.pathname !== "/") return undefined;
  if (text.endsWith("/")) return undefined;
  return url.origin;
}

/** Accepts an IPv4 or IPv6 address, or a CIDR block of either; returns it unchanged. */
export function parseTrustedProxy(text: string): string | undefined {
  const [address, prefixText, extra] = text.split("/");
  if (address === undefined || extra !== undefined) return undefined;
  const family = isIP(address);
  if (family === 0) return undefined;
  if (prefixText === undefined) return text;
  if (!/^\d{1,3}$/.test(prefixText)) return undefined;
  const prefix = Number(prefixText);
  return prefix <= (family === 4 ? 32 : 128) ? text : undefined;
}

/** True for names and addresses that only this machine can reach. */
export function isLoopbackHost(host: string): boolean {
  const bare = host.startsWith("[") && host.endsWith("]") ? host.slice(1, -1) : host;
  if (bare === "localhost" || bare.endsWith(".localhost")) return true;
  const address = canonicalAddress(bare);
  if (isIP(address) === 4) return address.startsWith("127.");
  return address === "::1";
}

/**
 * One spelling per address, so that one client is counted under one key: uWS writes IPv6 peers in full
 * (0000:…:0001), X-Forwarded-For may compress them, and an IPv4 client of a dual-stack socket appears as
 * an IPv4-mapped IPv6 address (::ffff:7f00:1), counted under its IPv4 address. Text that is no address
 * comes back unchanged.
 */
export function canonicalAddress(text: string): string {
  const family = isIP(text);
  if (family === 4) return text;
  if (family === 0) return text;
  let compressed: string;
  try {
    compressed = new URL(`http://[${text}]`).hostname.slice(1, -1);
  } catch {
    return text;
  }
  const mapped = /^::ffff:([0-9a-f]{1,4}):([0-9a-f]{1,4})$/.exec(compressed);
  if (mapped === null) return compressed;
  const high = Number.parseInt(mapped[1] ?? "0", 16);
  const low = Number.parseInt(mapped[2] ?? "0", 16);
  return `${high >> 8}.${high & 255}.${low >> 8}.${low & 255}`;
}

export class Admission {
  /** Refusals since start, by kind; reported by /healthz. */
  readonly refusals: Record<UpgradeRefusal, number> = {
    origin_not_allowed: 0,
    too_many_connections_from_address: 0,
    unauthenticated_full: 0,
  };
  /** Open sockets per client address; an address leaves the map with its last socket, so it is bounded by the sockets. */
  private readonly connectionsByAddress = new Map<string, number>();
  private readonly allowedOrigins: ReadonlySet<string>;
  private readonly anyOriginAllowed: boolean;
  private readonly trustedProxies: BlockList | undefined;

  constructor(
    private readonly options: AdmissionOptions,
    /** Sockets of the edge not yet welcomed (EdgeCore.unauthenticatedSessionCount). */
    private readonly unauthenticatedCount: () => number,
  ) {
    this.anyOriginAllowed = options.allowedOrigins.includes("*");
    this.allowedOrigins = new Set(options.allowedOrigins.map((origin) => origin.toLowerCase()));
    this.trustedProxies = options.trustedProxies.length === 0 ? undefined : blockListOf(options.trustedProxies);
  }

  /** Decides one upgrade; a socket admitted MUST be reported with connected() and, later, disconnected(). */
  decide(request: UpgradeRequest): AdmissionDecision {
    const clientAddress = this.clientAddressOf(request);
    const refusal = this.refusalFor(request.origin, clientAddress);
    if (refusal === undefined) return { admitted: true, clientAddress };
    this.refusals[refusal]++;
    return { admitted: false, refusal, clientAddress };
  }

  connected(clientAddress: string): void {
    this.connectionsByAddress.set(clientAddress, (this.connectionsByAddress.get(clientAddress) ?? 0) + 1);
  }

  disconnected(clientAddress: string): void {
    const count = this.connectionsByAddress.get(clientAddress) ?? 0;
    if (count <= 1) this.connectionsByAddress.delete(clientAddress);
    else this.connectionsByAddress.set(clientAddress, count - 1);
  }

  connectionsFrom(clientAddress: string): number {
    return this.connectionsByAddress.get(clientAddress) ?? 0;
  }

  private refusalFor(origin: string, clientAddress: string): UpgradeRefusal | undefined {
    if (!this.originAllowed(origin)) return "origin_not_allowed";
    if (this.connectionsFrom(clientAddress) >= this.options.connectionsPerAddressMax) return "too_many_connections_from_address";
    if (this.unauthenticatedCount() >= this.options.unauthenticatedMax) return "unauthenticated_full";
    return undefined;
  }

  /**
   * Only browsers send Origin, and they cannot forge it: the check keeps other sites' pages from using a
   * visitor's browser (and its address) against the edge. A client without Origin is not a browser page.
   */
  private originAllowed(origin: string): boolean {
    if (origin === "" || this.anyOriginAllowed) return true;
    if (this.allowedOrigins.has(origin.toLowerCase())) return true;
    if (!this.options.loopbackOriginsAllowed) return false;
    try {
      const url = new URL(origin);
      return (url.protocol === "http:" || url.protocol === "https:") && isLoopbackHost(url.hostname);
    } catch {
      return false;
    }
  }

  /**
   * The socket's peer, unless the peer is a trusted proxy. Then the source its PROXY header named takes the
   * peer's place (it is what the proxy itself saw, and a proxy that sends the header need not set
   * X-Forwarded-For), and, while the address so far is a trusted proxy, the nearest address in
   * X-Forwarded-For that is not one (entries further left were written by the client and prove nothing).
   * Trusted proxies MUST be HTTP proxies: uWS reads a PROXY header before every request of a connection,
   * so behind one that passes bytes through a client can follow a first request with a header of its own.
   */
  private clientAddressOf(request: UpgradeRequest): string {
    const peer = canonicalAddress(request.peerAddress);
    const proxies = this.trustedProxies;
    if (proxies === undefined || !isTrusted(proxies, peer)) return peer;
    const proxied = canonicalAddress(request.proxiedAddress);
    const nearestKnown = isIP(proxied) === 0 ? peer : proxied;
    if (request.forwardedFor === "" || !isTrusted(proxies, nearestKnown)) return nearestKnown;
    const hops = request.forwardedFor.split(",");
    let nearest = nearestKnown;
    for (let index = hops.length - 1; index >= 0; index--) {
      const hop = canonicalAddress((hops[index] ?? "").trim());
      if (isIP(hop) === 0) return nearest;
      nearest = hop;
      if (!isTrusted(proxies, hop)) return hop;
    }
    return nearest;
  }
}

function blockListOf(entries: readonly string[]): BlockList {
  const list = new BlockList();
  for (const entry of entries) {
    const [address = "", prefix] = entry.split("/");
    const family = isIP(address) === 4 ? "ipv4" : "ipv6";
    if (prefix === undefined) list.addAddress(address, family);
    else list.addSubnet(address, Number(prefix), family);
  }
  return list;
}

function isTrusted(proxies: BlockList, address: string): boolean {
  const family = isIP(address);
  return family !== 0 && proxies.check(address, family === 4 ? "ipv4" : "ipv6");
}
