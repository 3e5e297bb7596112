// Which cell homes each key, and at which epoch, from what every cell holds: the pure half of rebuilding a
// directory whose store forgot (docs/decisions/0023). The cells' rows are the truth here: a key lives
// where its data is, and the epochs its tombstones carry say how often it moved.
import type { DirectoryEntry, DirectoryEntryKind, InventoryKey } from "@cellwire/protocol";

/** One cell's row for one key, as cell.inventory listed it. */
export type CellKeyRow = { readonly cellId: string; readonly kind: DirectoryEntryKind; readonly key: InventoryKey };

export type MergedInventory = {
  readonly entries: DirectoryEntry[];
  /** Keys whose rows disagree in a way no rule settles cleanly, with what was decided: for the log. */
  readonly problems: string[];
};

/**
 * For each key, in this order:
 * - one cell holds it `active` and another `frozen`: the move's directory flip had happened (a target is
 *   only activated after it), so the active cell, one epoch past the source's;
 * - one cell holds it `active` or `frozen`: that cell (a frozen source keeps every row until the flip;
 *   the move's own flip, asking for that epoch, then succeeds or fails as it would have);
 * - only tombstones: the newest one's target (a cell that lost the key, or never answered, was listed as
 *   a cell: the key points where the cells say it went, and requests follow the tombstones);
 * - only `importing` rows: no entry (nothing was moved yet; the key is placed again when asked, and
 *   the abandoned copy is the sweeper's). Several active holders: the newest tombstone's target among
 *   them, else the first by id, reported as a problem.
 * The epoch is the highest a tombstone of the key carries (each move writes the target's epoch there),
 * or 1 for a key that never moved.
 */
export function mergeInventories(rows: readonly CellKeyRow[]): MergedInventory {
  const byKey = new Map<string, CellKeyRow[]>();
  for (const row of rows) {
    const mapKey = `${row.kind}:${row.key.id}`;
    const list = byKey.get(mapKey);
    if (list === undefined) byKey.set(mapKey, [row]);
    else list.push(row);
  }
  const entries: DirectoryEntry[] = [];
  const problems: string[] = [];
  for (const keyRows of byKey.values()) {
    const first = keyRows[0];
    if (first === undefined) continue;
    const { kind } = first;
    const { id } = first.key;
    const tombstones = keyRows.filter((row) => row.key.state === "moved" && row.key.movedEpoch !== null && row.key.movingToCellId !== null);
    const newest = tombstones.reduce<CellKeyRow | undefined>(
      (best, row) => (best === undefined || (row.key.movedEpoch ?? 0) > (best.key.movedEpoch ?? 0) ? row : best),
      undefined,
    );
    const baseEpoch = Math.max(1, ...tombstones.map((row) => row.key.movedEpoch ?? 0));
    const active = keyRows
      .filter((row) => row.key.state === "active")
      .map((row) => row.cellId)
      .sort();
    const frozen = keyRows
      .filter((row) => row.key.state === "frozen")
      .map((row) => row.cellId)
      .sort();
    const holders = active.length > 0 ? active : frozen;
    if (holders.length > 0) {
      let cellId = holders[0] ?? "";
      if (holders.length > 1) {
        const named = newest?.key.movingToCellId;
        if (named !== undefined && named !== null && holders.includes(named)) cellId = named;
        problems.push(`${kind} ${id} is ${active.length > 0 ? "active" : "frozen"} in cells ${holders.join(", ")}; homed in ${cellId}`);
      }
      // Active here while frozen elsewhere: the flip to this cell happened, one epoch past the source's.
      const epoch = active.length > 0 && frozen.length > 0 ? baseEpoch + 1 : baseEpoch;
      entries.push({ kind, id, cellId, epoch });
      continue;
    }
    if (newest !== undefined && newest.key.movingToCellId !== null) {
      problems.push(`${kind} ${id} has only tombstones; homed in ${newest.key.movingToCellId}, where the newest one says it went`);
      entries.push({ kind, id, cellId: newest.key.movingToCellId, epoch: baseEpoch });
      continue;
    }
    problems.push(`${kind} ${id} is only importing (in ${keyRows.map((row) => row.cellId).join(", ")}); left unplaced`);
  }
  return { entries, problems };
}
