import { describe, expect, it } from "vitest";
import type { CellInventoryAnswer, CellRecord, DirectoryEntry, DirectoryEntryKind, InventoryKey } from "@cellwire/protocol";
import { DirectoryRebuilder, rebuildLimitsDefault, type RebuildDependencies } from "./directory-rebuild.ts";

/** The directory's rebuild-facing surface in memory: entries, registry, marker and lock. */
class FakeDirectory implements Pick<RebuildDependencies["directory"], keyof RebuildDependencies["directory"]> {
  readonly entries = new Map<string, DirectoryEntry>();
  readonly cells = new Map<string, CellRecord>();
  marker: string | undefined;
  lock: string | undefined;

  async generation(): Promise<string | undefined> {
    return this.marker;
  }
  async lockRebuild(token: string): Promise<boolean> {
    if (this.lock !== undefined) return false;
    this.lock = token;
    return true;
  }
  async writeRebuiltEntries(token: string, _lockMs: number, entries: readonly DirectoryEntry[]): Promise<number | false> {
    if (this.lock !== token) return false;
    let written = 0;
    for (const entry of entries) {
      const key = `${entry.kind}:${entry.id}`;
      if (this.entries.has(key)) continue;
      this.entries.set(key, entry);
      written++;
    }
    return written;
  }
  async rebuildLock(
    token: string,
    _lockMs: number,
    action: { readonly kind: "extend" | "release" } | { readonly kind: "complete"; readonly generation: string },
  ): Promise<boolean> {
    if (this.lock !== token) return false;
    if (action.kind === "complete") this.marker = action.generation;
    if (action.kind !== "extend") this.lock = undefined;
    return true;
  }
  async registerCell(cellId: string, weight: number): Promise<{ readonly ok: true; readonly cells: CellRecord[] }> {
    this.cells.set(cellId, { cellId, weight, state: this.cells.get(cellId)?.state ?? "active" });
    return { ok: true, cells: [...this.cells.values()] };
  }
  async listCells(): Promise<CellRecord[]> {
    return [...this.cells.values()];
  }
}

type CellHoldings = Record<DirectoryEntryKind, InventoryKey[]>;
const active = (id: string): InventoryKey => ({ id, state: "active", movingToCellId: null, movedEpoch: null });

function setup(holdings: Record<string, CellHoldings>, options: { readonly silent?: Set<string>; readonly pageKeysMax?: number } = {}) {
  const directory = new FakeDirectory();
  const logs: string[] = [];
  const pages: string[] = [];
  let ids = 0;
  const rebuilder = new DirectoryRebuilder({
    directory,
    listCellIds: async () => Object.keys(holdings),
    inventoryPage: async (cellId, kind, afterId, limit): Promise<CellInventoryAnswer> => {
      if (options.silent?.has(cellId)) throw new Error(`no responders for cell ${cellId}`);
      pages.push(`${cellId}/${kind}/${afterId}`);
      const rows = (holdings[cellId]?.[kind] ?? []).filter((key) => key.id > afterId);
      return { type: "cell.inventoryPage", cellId, weight: 2, kind, keys: rows.slice(0, limit), done: rows.length <= limit };
    },
    logger: { info: (line) => logs.push(line), warn: (line) => logs.push(line) },
    uniqueId: () => `id-${++ids}`,
    sleep: async () => {},
    limits: { ...rebuildLimitsDefault, pageKeysMax: options.pageKeysMax ?? rebuildLimitsDefault.pageKeysMax },
  });
  return { directory, rebuilder, logs, pages };
}

describe("DirectoryRebuilder", () => {
  it("does nothing when the marker is there", async () => {
    const { directory, rebuilder, pages } = setup({ a: { user: [active("alice")], conversation: [] } });
    directory.marker = "g0";
    expect(await rebuilder.attempt()).toEqual({ outcome: "complete", generation: "g0" });
    expect(pages).toEqual([]);
    expect(directory.entries.size).toBe(0);
  });

  it("rebuilds every cell's keys page by page, registers the cells with their weights, then writes the marker and frees the lock", async () => {
    const { directory, rebuilder, pages } = setup(
      {
        a: { user: [active("alice"), active("carol"), active("dave")], conversation: [active("d-AAAAAAAAAAAAAAAAAAAAAA")] },
        b: { user: [active("bob")], conversation: [] },
      },
      { pageKeysMax: 2 },
    );
    expect(await rebuilder.attempt()).toMatchObject({ outcome: "rebuilt", cells: 2, entries: 5, written: 5 });
    expect(directory.entries.get("user:alice")).toEqual({ kind: "user", id: "alice", cellId: "a", epoch: 1 });
    expect(directory.entries.get("user:bob")).toMatchObject({ cellId: "b" });
    expect(directory.entries.get("conversation:d-AAAAAAAAAAAAAAAAAAAAAA")).toMatchObject({ cellId: "a" });
    expect([...directory.cells.values()]).toEqual([
      { cellId: "a", weight: 2, state: "active" },
      { cellId: "b", weight: 2, state: "active" },
    ]);
    expect(pages).toEqual(["a/user/", "a/user/carol", "a/conversation/", "b/user/", "b/conversation/"]);
    expect(directory.marker).toBeDefined();
    expect(directory.lock).toBeUndefined();
  });

  it("a fresh deployment (no cells) is complete at once", async () => {
    const { directory, rebuilder } = setup({});
    expect(await rebuilder.attempt()).toMatchObject({ outcome: "rebuilt", cells: 0, entries: 0 });
    expect(directory.marker).toBeDefined();
  });

  it("writes no marker while a cell does not answer, so placements stay refused; frees the lock for the retry", async () => {
    const { directory, rebuilder } = setup(
      { a: { user: [active("alice")], conversation: [] }, b: { user: [active("bob")], conversation: [] } },
      { silent: new Set(["b"]) },
    );
    expect(await rebuilder.attempt()).toMatchObject({ outcome: "failed", reason: expect.stringContaining("cell b") });
    expect(directory.marker).toBeUndefined();
    expect(directory.lock).toBeUndefined();
  });

  it("leaves the rebuild to the instance holding the lock", async () => {
    const { directory, rebuilder, pages } = setup({ a: { user: [active("alice")], conversation: [] } });
    directory.lock = "another instance";
    expect(await rebuilder.attempt()).toEqual({ outcome: "locked" });
    expect(pages).toEqual([]);
    expect(directory.lock).toBe("another instance");
  });

  it("retries until a silent cell answers, then completes once however often it is asked", async () => {
    const silent = new Set(["b"]);
    const { directory, rebuilder, logs } = setup(
      { a: { user: [active("alice")], conversation: [] }, b: { user: [active("bob")], conversation: [] } },
      { silent },
    );
    let attempts = 0;
    const original = rebuilder.attempt.bind(rebuilder);
    rebuilder.attempt = async () => {
      attempts++;
      if (attempts === 3) silent.clear();
      return original();
    };
    await Promise.all([rebuilder.ensure(), rebuilder.ensure()]);
    expect(attempts).toBe(3);
    expect(directory.entries.get("user:bob")).toMatchObject({ cellId: "b" });
    expect(rebuilder.complete).toBe(true);
    expect(logs.filter((line) => line.startsWith("directory rebuilt"))).toHaveLength(1);
  });
});
