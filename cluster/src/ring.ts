// The consistent hash ring of a cell: each worker places `virtualNodeCount` points on a 32-bit circle; a
// key belongs to the worker owning the first point at or after the key's hash. Adding or removing one of
// N workers moves only the keys between its points and their predecessors: about 1/N of them.
// Pure and deterministic: every edge and worker that sees the same members computes the same owners.

export const defaultVirtualNodeCount = 160;

/** FNV-1a over UTF-16 code units, then murmur3's finaliser so that similar strings spread evenly. */
export function hash32(text: string): number {
  let hash = 0x811c9dc5;
  for (let index = 0; index < text.length; index++) {
    hash ^= text.charCodeAt(index);
    hash = Math.imul(hash, 0x01000193);
  }
  hash ^= hash >>> 16;
  hash = Math.imul(hash, 0x85ebca6b);
  hash ^= hash >>> 13;
  hash = Math.imul(hash, 0xc2b2ae35);
  hash ^= hash >>> 16;
  return hash >>> 0;
}

export class Ring {
  private readonly points: Uint32Array;
  private readonly owners: string[];
  readonly members: readonly string[];

  constructor(
    members: Iterable<string>,
    readonly virtualNodeCount: number = defaultVirtualNodeCount,
  ) {
    const unique = [...new Set(members)].sort();
    this.members = unique;
    const entries: { point: number; member: string }[] = [];
    for (const member of unique) {
      for (let replica = 0; replica < virtualNodeCount; replica++) {
        entries.push({ point: hash32(`${member}#${replica}`), member });
      }
    }
    // Ties between two members' points are broken by name, so every process orders them alike.
    entries.sort((left, right) => left.point - right.point || (left.member < right.member ? -1 : left.member > right.member ? 1 : 0));
    this.points = Uint32Array.from(entries.map((entry) => entry.point));
    this.owners = entries.map((entry) => entry.member);
  }

  get size(): number {
    return this.members.length;
  }

  /** The owner of a key, or undefined when the ring is empty. */
  ownerOf(key: string): string | undefined {
    if (this.points.length === 0) return undefined;
    const target = hash32(key);
    let low = 0;
    let high = this.points.length;
    while (low < high) {
      const middle = (low + high) >>> 1;
      if ((this.points[middle] ?? 0) < target) low = middle + 1;
      else high = middle;
    }
    return this.owners[low === this.points.length ? 0 : low];
  }

  /** The share of the 32-bit hash space each member owns (sums to 1 for a non-empty ring). */
  shares(): Map<string, number> {
    const shares = new Map<string, number>(this.members.map((member) => [member, 0]));
    const count = this.points.length;
    for (let index = 0; index < count; index++) {
      const point = this.points[index] ?? 0;
      const previous = index === 0 ? (this.points[count - 1] ?? 0) - 2 ** 32 : (this.points[index - 1] ?? 0);
      const owner = this.owners[index];
      if (owner !== undefined) shares.set(owner, (shares.get(owner) ?? 0) + (point - previous) / 2 ** 32);
    }
    return shares;
  }
}
