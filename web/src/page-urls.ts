// Where the page finds its edge: the same origin that served it (an edge in dev mode).
import { isDeviceId, isUserId } from "@cellwire/client";

export type PageLocation = { readonly protocol: string; readonly host: string };

/** ws://host/ws for an http page, wss://host/ws for an https one. */
export function webSocketUrlFor(location: PageLocation): string {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  return `${scheme}//${location.host}/ws`;
}

export function tokenPathFor(userId: string, deviceId: string): string {
  return `/dev/token?${new URLSearchParams({ userId, deviceId }).toString()}`;
}

/** Decodes the body of GET /dev/token ({ token }); throws with a readable reason otherwise. */
export function parseTokenResponse(body: unknown): string {
  if (typeof body !== "object" || body === null || Array.isArray(body)) throw new Error("the token response is not a JSON object");
  const token = (body as { readonly token?: unknown }).token;
  if (typeof token !== "string" || token.length === 0) throw new Error("the token response has no token");
  return token;
}

export type StartParameters = { readonly userId: string; readonly peerUserId: string };

/** `?user=alice&peer=bob` fills the form and connects at once (handy with two tabs). */
export function startParametersFrom(search: string): StartParameters | null {
  const query = new URLSearchParams(search);
  const userId = query.get("user") ?? "";
  const peerUserId = query.get("peer") ?? "";
  return isUserId(userId) && isUserId(peerUserId) && userId !== peerUserId ? { userId, peerUserId } : null;
}

/** A device id per browser tab (kept across reloads by the caller in sessionStorage). */
export function createDeviceId(randomValues: (array: Uint8Array) => Uint8Array): string {
  const bytes = randomValues(new Uint8Array(6));
  const id = `web-${Array.from(bytes, (byte) => byte.toString(16).padStart(2, "0")).join("")}`;
  if (!isDeviceId(id)) throw new Error(`generated an invalid device id ${id}`);
  return id;
}
