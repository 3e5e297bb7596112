// Default clientMessageIds: random UUIDs (they fit the protocol's clientMessageId pattern).

type CryptoLike = {
  readonly randomUUID?: () => string;
  readonly getRandomValues?: (array: Uint8Array) => Uint8Array;
};

/**
 * A random v4 UUID. Browsers expose crypto.randomUUID only in secure contexts (https, localhost), so a dev
 * page opened over plain http from another machine falls back to crypto.getRandomValues, which every
 * context has.
 */
export function createClientMessageId(crypto: CryptoLike | undefined = globalThis.crypto): string {
  if (crypto?.randomUUID !== undefined) return crypto.randomUUID();
  if (crypto?.getRandomValues === undefined) {
    throw new TypeError("CellwireClient: no crypto.randomUUID or crypto.getRandomValues here; pass a clientMessageId to send()");
  }
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  // RFC 9562 version 4 and variant bits.
  bytes[6] = ((bytes[6] ?? 0) & 0x0f) | 0x40;
  bytes[8] = ((bytes[8] ?? 0) & 0x3f) | 0x80;
  const hex = Array.from(bytes, (byte) => byte.toString(16).padStart(2, "0")).join("");
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}
