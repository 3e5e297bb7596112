// How a key's migration state (schema.ts) answers a request, shared by both stores so that they refuse
// alike. Pure: the stores read the row, these functions decide.
import { StoreRowError } from "./errors.ts";
import { keyStates, type KeyState } from "./schema.ts";
import type { Fenced, ImportPageResult, MigrationKey, MigrationRefusal, Moved } from "./store.ts";

/** The columns of a conversation or mailbox row that decide whether a request for its key is served. */
export type KeyRow = {
  readonly state: KeyState;
  readonly ownerEpoch: number;
  readonly movingToCellId: string | null;
  readonly movedEpoch: number | null;
};

const fenced: Fenced = { outcome: "fenced" };
const moving = { outcome: "moving" } as const;

/** The tombstone's answer; a moved row without its new home is a bug or a hand-edited database. */
export function movedOf(row: KeyRow): Moved {
  if (row.movingToCellId === null || row.movedEpoch === null) throw new StoreRowError("a moved row must name its new cell and epoch");
  return { outcome: "moved", cellId: row.movingToCellId, epoch: row.movedEpoch };
}

/**
 * Why a write under `epoch` is refused for a key with this row, or undefined when neither the state nor
 * the fence refuses it (or there is no row). In this order: a tombstone answers `moved` whoever asks (it
 * is true for every owner), a later epoch `fenced` (the writer is a stale owner and must route again),
 * and a migration in progress `moving`.
 */
export function writeRefusal(row: KeyRow | undefined, epoch: number): Fenced | MigrationRefusal | undefined {
  if (row === undefined) return undefined;
  if (row.state === "moved") return movedOf(row);
  if (row.ownerEpoch > epoch) return fenced;
  if (row.state === "frozen" || row.state === "importing") return moving;
  return undefined;
}

/**
 * Whether a refused write is better answered not_a_member: the refusal is `moving` for a frozen
 * conversation and the writer is not one of its members. A frozen row in its old home holds every member
 * (a change of members is a write, refused while frozen), so the answer is certain; and it must be the
 * one a non-member gets for a conversation that does not exist, or a migration (whose `moving` ends as a
 * retryable cell_unavailable once the requester's retries are spent) would tell a non-member that the
 * conversation exists (issue 10). An importing row may not hold every member yet: its `moving` stands,
 * and the requester's retries meet the activated conversation, which answers by its members.
 */
export function frozenForNonMember(row: KeyRow | undefined, refusal: Fenced | MigrationRefusal | undefined, isMember: boolean): boolean {
  return refusal?.outcome === "moving" && row?.state === "frozen" && !isMember;
}

/** Reads are served while active or frozen (the old home still has every row); not while importing or moved. */
export function readRefusal(row: Omit<KeyRow, "ownerEpoch"> | undefined): MigrationRefusal | undefined {
  if (row === undefined) return undefined;
  if (row.state === "moved") return movedOf({ ...row, ownerEpoch: 0 });
  if (row.state === "importing") return moving;
  return undefined;
}

export function parseKeyState(value: unknown): KeyState {
  const state = keyStates.find((candidate) => candidate === value);
  if (state === undefined) throw new StoreRowError(`state is not a key state: ${String(value).slice(0, 40)}`);
  return state;
}

/**
 * Why an import page was not applied to a key with this row. An active key answers `active` whatever the
 * page: activation only ever follows the directory flip, so an active key is this cell's to keep and an
 * earlier attempt finished the move. A frozen key (this cell is moving it out) answers `moving`; a later
 * page for a key with no import in progress (no row, or a tombstone) `not_importing`.
 */
export function importRefusal(row: KeyRow | undefined, epoch: number, first: boolean): ImportPageResult {
  if (row === undefined) return { outcome: "not_importing" };
  if (row.state === "active") return { outcome: "active" };
  if (row.ownerEpoch > epoch) return fenced;
  if (row.state === "frozen") return moving;
  if (!first && row.state === "moved") return { outcome: "not_importing" };
  // Only a concurrent change of the row gets here: route again.
  return fenced;
}

/**
 * The kind of a placeholder conversation row, from its id's prefix (protocol conversationIdPattern: `d-`
 * direct, `g-` group); any other id is a programmer error, since ids are decoded before they get here.
 */
export function placeholderConversationKind(conversationId: string): "direct" | "group" {
  if (conversationId.startsWith("d-")) return "direct";
  if (conversationId.startsWith("g-")) return "group";
  throw new RangeError(`conversation id ${conversationId.slice(0, 40)} has neither the d- nor the g- prefix`);
}

/**
 * The order of MigrationStore.frozenKeys: conversations before users, then ids compared by UTF-16 code
 * unit, which for the ASCII ids the protocol allows is Postgres's bytewise `collate "C"`.
 */
export function compareMigrationKeys(left: MigrationKey, right: MigrationKey): number {
  if (left.kind !== right.kind) return left.kind === "conversation" ? -1 : 1;
  return left.id < right.id ? -1 : left.id > right.id ? 1 : 0;
}
