// The edge URLs a client may connect to. Any edge serves any user, so a client given several rotates
// through them (connection-machine.ts decides when); this module only validates the option once.

/** A list longer than this is a configuration mistake, not a deployment: behind it sits an L4 balancer. */
export const edgeUrlCountMax = 64;

/**
 * The `url` option as a non-empty list of absolute ws:// or wss:// URLs, in the caller's order (the first
 * is tried first). Throws a TypeError or RangeError on a programmer error: an empty list, a duplicate (it
 * would make "the next edge" the same edge), a URL that does not parse or uses another scheme.
 */
export function normaliseEdgeUrls(option: string | readonly string[]): readonly string[] {
  const urls: readonly unknown[] = typeof option === "string" ? [option] : Array.isArray(option) ? option : [option];
  if (urls.length === 0) throw new TypeError("CellwireClient: url must be a URL or a non-empty list of URLs, got an empty list");
  if (urls.length > edgeUrlCountMax) throw new RangeError(`CellwireClient: url lists at most ${edgeUrlCountMax} URLs, got ${urls.length}`);
  const checked: string[] = [];
  for (const url of urls) {
    const valid = checkedEdgeUrl(url);
    if (checked.includes(valid)) throw new TypeError(`CellwireClient: url lists ${JSON.stringify(valid)} twice`);
    checked.push(valid);
  }
  return Object.freeze(checked);
}

function checkedEdgeUrl(url: unknown): string {
  const refused = `CellwireClient: url must be an absolute ws:// or wss:// URL, got ${JSON.stringify(url)}`;
  if (typeof url !== "string") throw new TypeError(refused);
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    throw new TypeError(refused);
  }
  if (parsed.protocol !== "ws:" && parsed.protocol !== "wss:")
    throw new TypeError(`CellwireClient: url must use ws: or wss:, got ${JSON.stringify(url)}`);
  return url;
}
