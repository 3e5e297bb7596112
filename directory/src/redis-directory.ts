// The directory's data in Redis: user and conversation entries (each a hash {cellId, epoch}), the cell
// registry (one hash, cellId -> JSON {weight, state}) and, per cell and kind, the set of ids homed there
// (`<namespace>:cell:<cellId>:users` / `:conversations`), which a drain pages through. Every write is one
// Lua script, so two edges racing to place the same new user place it once, and an entry and its cell's
// set never disagree.
//
// A Redis can forget (restarted without persistence, a replica promoted after an asynchronous failover):
// `<namespace>:generation` is written only once the data is known complete (at first start, or after a
// rebuild from what the cells hold), and every placement and move script refuses when it is missing, so
// a forgotten user is never placed a second time, elsewhere (docs/decisions/0023).
import type { Redis } from "ioredis";
import {
  cellId as cellIdDecoder,
  decode,
  integer,
  isCellId,
  isConversationId,
  isUserId,
  object,
  oneOf,
  parseJson,
  cellEntriesPageMax,
  redisPrefix,
  type CellErrorCode,
  type CellRecord,
  type CellState,
  type DirectoryEntry,
  type DirectoryEntryKind,
} from "@cellwire/protocol";
import { DirectoryStoreError, fromRedisError } from "./errors.ts";
import { LuaScript } from "./lua-script.ts";

/** Cells in the registry; matches the most a directory.cells reply may carry. */
export const cellsMax = 1000;
/** Keys unlinked per SCAN round when a namespace is destroyed. */
const destroyScanCount = 500;
/** SCAN rounds before destroyNamespace gives up (about fifty million keys at destroyScanCount). */
const destroyScanRoundsMax = 100_000;

export type PlacedEntry = { readonly ok: true; readonly entry: DirectoryEntry; readonly placed: boolean };
/** An expected refusal, returned rather than thrown: the service turns it into a directory.error reply. */
export type DirectoryRefusal<Code extends CellErrorCode> = Code extends CellErrorCode
  ? { readonly ok: false; readonly code: Code; readonly message: string }
  : never;
export type PlacementResult = PlacedEntry | DirectoryRefusal<"no_cell_available" | "directory_unavailable">;
export type AssignmentResult = PlacedEntry | DirectoryRefusal<"unknown_cell" | "directory_unavailable">;
export type RegistrationResult = { readonly ok: true; readonly cells: CellRecord[] } | DirectoryRefusal<"invalid_field">;
export type CellStateResult = { readonly ok: true; readonly cells: CellRecord[] } | DirectoryRefusal<"unknown_cell">;
/** `moved` is false when the entry was already where the move asked (a repeated request). */
export type MoveResult =
  | { readonly ok: true; readonly entry: DirectoryEntry; readonly moved: boolean }
  | DirectoryRefusal<"not_found" | "unknown_cell" | "invalid_field" | "entry_changed" | "directory_unavailable">;
export type CellEntriesPage = { readonly ok: true; readonly ids: string[]; readonly cursor: string } | DirectoryRefusal<"unknown_cell">;
export type MoveEntryInput = {
  readonly kind: DirectoryEntryKind;
  readonly id: string;
  readonly fromCellId: string;
  readonly toCellId: string;
  readonly expectedEpoch: number;
};

/** The most ids a directory.cellEntries reply may carry (SSCAN's COUNT is a hint, not a bound). */
export const cellEntriesReplyIdsMax = 10 * cellEntriesPageMax;

/**
 * Lua shared by the placement scripts: which registered cells are active, with their weights, and the
 * weighted pick among them.
 */
const cellChoiceLua = `
-- The weight of a registry value if the cell is active, else nil (draining, or undecodable).
local function activeWeight(raw)
  local ok, record = pcall(cjson.decode, raw)
  if not ok or type(record) ~= 'table' or record['state'] ~= 'active' then return nil end
  local weight = tonumber(record['weight'])
  if weight == nil or weight < 1 then return nil end
  return weight
end

-- The active cells' ids (sorted: HGETALL order depends on the hash's history, and sorting makes the pick
-- a function of the random alone), their weights and the weights' total.
local function activeCells(cellsKey)
  local flat = redis.call('HGETALL', cellsKey)
  local ids, weights, total = {}, {}, 0
  for index = 1, #flat, 2 do
    local weight = activeWeight(flat[index + 1])
    if weight then
      table.insert(ids, flat[index])
      weights[flat[index]] = weight
      total = total + weight
    end
  end
  table.sort(ids)
  return ids, weights, total
end

-- The cell whose share of the total holds random * total (total > 0).
local function pickCell(ids, weights, total, random)
  local threshold, cumulative = random * total, 0
  for _, id in ipairs(ids) do
    cumulative = cumulative + weights[id]
    if threshold < cumulative then return id end
  end
  return ids[#ids]
end
`;

/**
 * KEYS[1] the entry's hash, KEYS[2] the cell registry, KEYS[3] the generation marker.
 * ARGV[1] mode: "prefer" (ARGV[2] is a preferred cell, or "") or "require" (ARGV[2] must be registered).
 * ARGV[3] a random number in [0, 1) chosen by the caller, so the script itself stays deterministic.
 * ARGV[4] the prefix of the per-cell sets (`<namespace>:cell:`), ARGV[5] the kind's set suffix (`users`),
 * ARGV[6] the entry's id (the set's member).
 * Replies {"existing", cellId, epoch}, {"placed", cellId, epoch}, {"no_cell_available"}, {"unknown_cell"} or
 * {"forgotten"} (no entry, and no generation marker: nothing is placed until the rebuild wrote it).
 * An existing entry is returned unchanged: placement never moves a user (migration bumps the epoch).
 * The chosen cell's set is only known inside the script, so its key is built here rather than passed in
 * KEYS: fine on the single primary we run; a Redis Cluster would need a `{namespace}` hash tag anyway.
 */
const placementScript = new LuaScript(`
local entryKey, cellsKey, generationKey = KEYS[1], KEYS[2], KEYS[3]
local mode, requestedCellId, random = ARGV[1], ARGV[2], tonumber(ARGV[3])
local cellSetPrefix, kindSuffix = ARGV[4], ARGV[5]
${cellChoiceLua}
if mode == 'require' and redis.call('HEXISTS', cellsKey, requestedCellId) == 0 then
  return {'unknown_cell'}
end

local existing = redis.call('HMGET', entryKey, 'cellId', 'epoch')
if existing[1] then
  return {'existing', existing[1], existing[2]}
end
-- No entry and no marker: the store may have forgotten this one; placing it could place it twice.
if redis.call('EXISTS', generationKey) == 0 then return {'forgotten'} end

local chosen = nil
if mode == 'require' then
  chosen = requestedCellId
elseif requestedCellId ~= '' then
  local raw = redis.call('HGET', cellsKey, requestedCellId)
  if raw and activeWeight(raw) then chosen = requestedCellId end
end

if not chosen then
  local ids, weights, total = activeCells(cellsKey)
  if total == 0 then return {'no_cell_available'} end
  chosen = pickCell(ids, weights, total, random)
end

redis.call('HSET', entryKey, 'cellId', chosen, 'epoch', '1')
redis.call('SADD', cellSetPrefix .. chosen .. ':' .. kindSuffix, ARGV[6])
return {'placed', chosen, '1'}
`);

/**
 * resolveUser for many users in one script call (directory.resolveUsers): each user as placementScript
 * does it in "prefer" mode with no preferred cell, in order, so a user named twice is placed by the first
 * and found by the second. KEYS[1] the cell registry, KEYS[2] the generation marker, KEYS[3…] the users'
 * entry hashes; ARGV[1] the prefix of the per-cell sets, ARGV[2] the kind's set suffix, then for each user
 * its random number in [0, 1) and its id. The marker and the registry are read once, when a user first
 * needs them. Replies one array per user, as placementScript's: {"existing", cellId, epoch},
 * {"placed", cellId, "1"}, {"no_cell_available"} or {"forgotten"}.
 */
const userPlacementsScript = new LuaScript(`
local cellsKey, generationKey = KEYS[1], KEYS[2]
local cellSetPrefix, kindSuffix = ARGV[1], ARGV[2]
${cellChoiceLua}
local generationKnown = nil
local ids, weights, total = nil, nil, 0
local replies = {}
for index = 3, #KEYS do
  local entryKey = KEYS[index]
  local random, id = tonumber(ARGV[2 * index - 3]), ARGV[2 * index - 2]
  local existing = redis.call('HMGET', entryKey, 'cellId', 'epoch')
  if existing[1] then
    replies[#replies + 1] = {'existing', existing[1], existing[2]}
  else
    if generationKnown == nil then generationKnown = redis.call('EXISTS', generationKey) == 1 end
    if not generationKnown then
      replies[#replies + 1] = {'forgotten'}
    else
      if ids == nil then ids, weights, total = activeCells(cellsKey) end
      if total == 0 then
        replies[#replies + 1] = {'no_cell_available'}
      else
        local chosen = pickCell(ids, weights, total, random)
        redis.call('HSET', entryKey, 'cellId', chosen, 'epoch', '1')
        redis.call('SADD', cellSetPrefix .. chosen .. ':' .. kindSuffix, id)
        replies[#replies + 1] = {'placed', chosen, '1'}
      end
    end
  end
end
return replies
`);

/**
 * KEYS[1] the cell registry. ARGV[1] cellId, ARGV[2] weight, ARGV[3] cellsMax.
 * A new cell is active; a known cell keeps its state and takes the new weight.
 * Replies {"registered", HGETALL of the registry} or {"registry_full"}.
 */
const registrationScript = new LuaScript(`
local cellsKey = KEYS[1]
local cellId, weight, cellsMax = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local state = 'active'
local raw = redis.call('HGET', cellsKey, cellId)
if raw then
  local ok, record = pcall(cjson.decode, raw)
  if ok and type(record) == 'table' and (record['state'] == 'active' or record['state'] == 'draining') then
    state = record['state']
  end
elseif redis.call('HLEN', cellsKey) >= cellsMax then
  return {'registry_full'}
end
redis.call('HSET', cellsKey, cellId, cjson.encode({weight = weight, state = state}))
return {'registered', redis.call('HGETALL', cellsKey)}
`);

/**
 * KEYS[1] the entry's hash, KEYS[2] the cell registry, KEYS[3] the source cell's set, KEYS[4] the target
 * cell's set, KEYS[5] the generation marker (a move waits for the rebuild, whose entries it must see). ARGV[1] id, ARGV[2] fromCellId, ARGV[3] toCellId, ARGV[4] expectedEpoch, ARGV[5] the next
 * epoch (decimal strings, compared as strings: epochs are only ever written in canonical form).
 * Replies {"not_found"}, {"already_moved", cellId, epoch}, {"unknown_cell"}, {"draining"}, {"undecodable", raw},
 * {"moved", cellId, epoch} or {"entry_changed", cellId, epoch}.
 * The repeat is recognised before the target is checked: a migration whose first flip succeeded but whose
 * reply was lost must see success on retry even if the target was drained meanwhile, or the source would
 * unfreeze a key the directory already routes elsewhere.
 */
const moveScript = new LuaScript(`
local entryKey, cellsKey, fromSetKey, toSetKey, generationKey = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local id, fromCellId, toCellId, expectedEpoch, nextEpoch = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
if redis.call('EXISTS', generationKey) == 0 then return {'forgotten'} end

local current = redis.call('HMGET', entryKey, 'cellId', 'epoch')
if not current[1] then return {'not_found'} end
if current[1] == toCellId and current[2] == nextEpoch then
  return {'already_moved', current[1], current[2]}
end

local raw = redis.call('HGET', cellsKey, toCellId)
if not raw then return {'unknown_cell'} end
local ok, record = pcall(cjson.decode, raw)
if not ok or type(record) ~= 'table' then return {'undecodable', raw} end
if record['state'] ~= 'active' then return {'draining'} end

if current[1] ~= fromCellId or current[2] ~= expectedEpoch then
  return {'entry_changed', current[1], current[2] or ''}
end

redis.call('HSET', entryKey, 'cellId', toCellId, 'epoch', nextEpoch)
-- SMOVE does nothing when the id is missing from the source set (an entry written before the sets
-- existed); the SADD makes the target's set right either way.
if redis.call('SMOVE', fromSetKey, toSetKey, id) == 0 then redis.call('SADD', toSetKey, id) end
return {'moved', toCellId, nextEpoch}
`);

/**
 * KEYS[1] the rebuild lock. ARGV[1] the rebuilder's token, ARGV[2] the lock's new lifetime (ms), ARGV[3]
 * the entry key prefix (`<namespace>:`), ARGV[4] the cell set prefix (`<namespace>:cell:`), then per entry
 * five values: kind, id, cellId, epoch, the kind's set suffix.
 * Writes each entry that does not exist (one that does was written by the directory itself and is kept),
 * and extends the lock. Replies {"written", count} or {"lock_lost"} (another rebuilder took over).
 */
const rebuildEntriesScript = new LuaScript(`
local lockKey = KEYS[1]
local token, lockMs, entryPrefix, cellSetPrefix = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
if redis.call('GET', lockKey) ~= token then return {'lock_lost'} end
redis.call('PEXPIRE', lockKey, lockMs)
local written = 0
for index = 5, #ARGV, 5 do
  local kind, id, cellId, epoch, suffix = ARGV[index], ARGV[index + 1], ARGV[index + 2], ARGV[index + 3], ARGV[index + 4]
  local entryKey = entryPrefix .. kind .. ':' .. id
  if redis.call('EXISTS', entryKey) == 0 then
    redis.call('HSET', entryKey, 'cellId', cellId, 'epoch', epoch)
    redis.call('SADD', cellSetPrefix .. cellId .. ':' .. suffix, id)
    written = written + 1
  end
end
return {'written', written}
`);

/**
 * KEYS[1] the rebuild lock, KEYS[2] the generation marker. ARGV[1] the rebuilder's token, ARGV[2] the
 * lock's new lifetime (ms), ARGV[3] "complete" to write the marker (ARGV[4], the generation) and release
 * the lock, "extend" to extend it, "release" to release it. Replies {"ok"} or {"lock_lost"}.
 */
const rebuildLockScript = new LuaScript(`
local lockKey, generationKey = KEYS[1], KEYS[2]
local token, lockMs, action = ARGV[1], ARGV[2], ARGV[3]
if redis.call('GET', lockKey) ~= token then return {'lock_lost'} end
if action == 'extend' then
  redis.call('PEXPIRE', lockKey, lockMs)
elseif action == 'complete' then
  redis.call('SET', generationKey, ARGV[4])
  redis.call('DEL', lockKey)
else
  redis.call('DEL', lockKey)
end
return {'ok'}
`);

/**
 * KEYS[1] the cell registry. ARGV[1] cellId, ARGV[2] state. The weight is kept.
 * Replies {"set", HGETALL of the registry}, {"unknown_cell"} or {"undecodable", raw value}.
 */
const cellStateScript = new LuaScript(`
local cellsKey = KEYS[1]
local cellId, state = ARGV[1], ARGV[2]
local raw = redis.call('HGET', cellsKey, cellId)
if not raw then return {'unknown_cell'} end
local ok, record = pcall(cjson.decode, raw)
if not ok or type(record) ~= 'table' or tonumber(record['weight']) == nil then return {'undecodable', raw} end
redis.call('HSET', cellsKey, cellId, cjson.encode({weight = tonumber(record['weight']), state = state}))
return {'set', redis.call('HGETALL', cellsKey)}
`);

const cellSetSuffixes: Readonly<Record<DirectoryEntryKind, string>> = { user: "users", conversation: "conversations" };
const cellValue = object({ weight: integer({ min: 1, max: 1_000_000 }), state: oneOf<CellState>(["active", "draining"]) });
const epochPattern = /^[1-9][0-9]{0,15}$/;

export type RedisDirectoryOptions = {
  /**
   * Called whenever a placement or a move is refused for a missing generation marker: whoever rebuilds
   * hooks in there.
   */
  readonly forgotten?: () => void;
  /** Replicas that must acknowledge (Redis WAIT) a placement or move before it is answered; 0 for none. */
  readonly replicaAcksMin?: number;
  /** The WAIT's timeout; past it the request is answered directory_unavailable. */
  readonly replicaWaitMs?: number;
};

export class RedisDirectory {
  private readonly prefix: string;
  private readonly cellsKey: string;
  private readonly cellSetPrefix: string;
  /** Exists only while the data is known complete (docs/decisions/0023). */
  private readonly generationKey: string;
  /** Held by the one directory instance rebuilding the data, with a lifetime it extends while it works. */
  private readonly rebuildLockKey: string;

  private readonly forgotten: () => void;
  private readonly replicaAcksMin: number;
  private readonly replicaWaitMs: number;

  /** The caller owns `redis` (connects, configures timeouts, quits). */
  constructor(
    private readonly redis: Redis,
    namespace: string,
    options: RedisDirectoryOptions = {},
  ) {
    this.forgotten = options.forgotten ?? (() => {});
    this.replicaAcksMin = options.replicaAcksMin ?? 0;
    this.replicaWaitMs = options.replicaWaitMs ?? 500;
    this.prefix = redisPrefix(namespace);
    this.cellsKey = `${this.prefix}cells`;
    this.cellSetPrefix = `${this.prefix}cell:`;
    this.generationKey = `${this.prefix}generation`;
    this.rebuildLockKey = `${this.prefix}rebuild`;
  }

  /** The generation marker, or undefined when the data is not known complete (never written, or forgotten). */
  async generation(): Promise<string | undefined> {
    const value = await this.call(`GET ${this.generationKey}`, () => this.redis.get(this.generationKey));
    return value ?? undefined;
  }

  /** Takes the rebuild lock for `lockMs` unless another rebuilder holds it. */
  async lockRebuild(token: string, lockMs: number): Promise<boolean> {
    const reply = await this.call(`SET ${this.rebuildLockKey}`, () => this.redis.set(this.rebuildLockKey, token, "PX", lockMs, "NX"));
    return reply === "OK";
  }

  /**
   * Writes rebuilt entries that do not exist yet (and their cells' sets), extending the lock. Answers how
   * many were written, or false when the lock is no longer this rebuilder's.
   */
  async writeRebuiltEntries(token: string, lockMs: number, entries: readonly DirectoryEntry[]): Promise<number | false> {
    const args = [token, String(lockMs), this.prefix, this.cellSetPrefix];
    for (const entry of entries) {
      assertId(entry.kind === "user" ? isUserId(entry.id) : isConversationId(entry.id), `${entry.kind} id`, entry.id);
      assertId(isCellId(entry.cellId), "cell id", entry.cellId);
      if (!Number.isSafeInteger(entry.epoch) || entry.epoch < 1) throw new TypeError(`invalid epoch ${entry.epoch}`);
      args.push(entry.kind, entry.id, entry.cellId, String(entry.epoch), cellSetSuffixes[entry.kind]);
    }
    const reply = await this.call(`rebuild of ${entries.length} entries`, () =>
      rebuildEntriesScript.run(this.redis, [this.rebuildLockKey], args),
    );
    const [status, count] = asArray(reply) ?? [];
    if (status === "lock_lost") return false;
    if (status !== "written" || typeof count !== "number") throw new DirectoryStoreError(`rebuild script replied ${describe(reply)}`);
    return count;
  }

  /** Extends the rebuild lock, writes the generation marker and releases the lock, or only releases it. */
  async rebuildLock(
    token: string,
    lockMs: number,
    action: { readonly kind: "extend" | "release" } | { readonly kind: "complete"; readonly generation: string },
  ): Promise<boolean> {
    const args = [token, String(lockMs), action.kind, action.kind === "complete" ? action.generation : ""];
    const reply = await this.call(`${action.kind} of ${this.rebuildLockKey}`, () =>
      rebuildLockScript.run(this.redis, [this.rebuildLockKey, this.generationKey], args),
    );
    const [status] = asArray(reply) ?? [];
    if (status === "lock_lost") return false;
    if (status !== "ok") throw new DirectoryStoreError(`rebuild lock script replied ${describe(reply)}`);
    return true;
  }

  /** The user's entry; a user seen for the first time is placed on an active cell chosen by weight. */
  async resolveUser(userId: string, random: number): Promise<PlacementResult> {
    assertId(isUserId(userId), "user id", userId);
    const reply = await this.place("user", userId, "prefer", "", random);
    if (reply.ok || reply.code === "no_cell_available" || reply.code === "directory_unavailable") return reply;
    throw new DirectoryStoreError(`placement of user ${userId} answered ${reply.code} in prefer mode`);
  }

  /**
   * resolveUser for each of `users`, in one script call (one Redis round trip) and at most one WAIT for
   * the replicas. A placement the replicas did not acknowledge answers directory_unavailable, as alone.
   */
  async resolveUsers(users: readonly { readonly userId: string; readonly random: number }[]): Promise<PlacementResult[]> {
    for (const { userId, random } of users) {
      assertId(isUserId(userId), "user id", userId);
      assertRandom(random);
    }
    if (users.length === 0) return [];
    const entryKeys = users.map(({ userId }) => this.entryKey("user", userId));
    const reply = await this.call(`placement of ${users.length} users`, () =>
      userPlacementsScript.run(
        this.redis,
        [this.cellsKey, this.generationKey, ...entryKeys],
        [this.cellSetPrefix, cellSetSuffixes.user, ...users.flatMap(({ userId, random }) => [String(random), userId])],
      ),
    );
    const replies = asArray(reply);
    if (replies === undefined || replies.length !== users.length)
      throw new DirectoryStoreError(`user placements script replied ${describe(reply)}`);
    const results = users.map(({ userId }, index): PlacementResult => {
      const outcome = this.placementOutcome("user", userId, entryKeys[index] ?? "", "", replies[index]);
      if (outcome.ok || outcome.code !== "unknown_cell") return outcome;
      throw new DirectoryStoreError(`user placements script answered unknown_cell for user ${userId}`);
    });
    const anyPlaced = results.some((result) => result.ok && result.placed);
    const unreplicated = anyPlaced ? await this.unreplicated(`placement of ${users.length} users`) : undefined;
    return results.map((result) => (unreplicated !== undefined && result.ok && result.placed ? unreplicated : result));
  }

  /** Places the user on `cellId` unless already placed (then the entry is returned unchanged). */
  async assignUser(userId: string, cellId: string): Promise<AssignmentResult> {
    assertId(isUserId(userId), "user id", userId);
    assertId(isCellId(cellId), "cell id", cellId);
    // The random number is unused in require mode; 0 keeps the script's arguments well formed.
    const reply = await this.place("user", userId, "require", cellId, 0);
    if (reply.ok || reply.code === "unknown_cell" || reply.code === "directory_unavailable") return reply;
    throw new DirectoryStoreError(`assignment of user ${userId} answered ${reply.code} in require mode`);
  }

  async lookupConversation(conversationId: string): Promise<DirectoryEntry | undefined> {
    assertId(isConversationId(conversationId), "conversation id", conversationId);
    return this.lookup("conversation", conversationId);
  }

  /** The user's entry, or undefined for a user never placed (nothing is placed here). */
  async lookupUser(userId: string): Promise<DirectoryEntry | undefined> {
    assertId(isUserId(userId), "user id", userId);
    return this.lookup("user", userId);
  }

  private async lookup(kind: "user" | "conversation", id: string): Promise<DirectoryEntry | undefined> {
    const key = this.entryKey(kind, id);
    const [rawCellId, rawEpoch] = await this.call(`HMGET ${key}`, () => this.redis.hmget(key, "cellId", "epoch"));
    if ((rawCellId ?? null) === null && (rawEpoch ?? null) === null) return undefined;
    return decodeEntry(kind, id, rawCellId, rawEpoch, key);
  }

  /**
   * Places a new conversation on preferredCellId when it is registered and active, else on an active cell
   * chosen by weight; an existing entry is returned unchanged.
   */
  async placeConversation(conversationId: string, preferredCellId: string, random: number): Promise<PlacementResult> {
    assertId(isConversationId(conversationId), "conversation id", conversationId);
    assertId(isCellId(preferredCellId), "cell id", preferredCellId);
    const reply = await this.place("conversation", conversationId, "prefer", preferredCellId, random);
    if (reply.ok || reply.code === "no_cell_available" || reply.code === "directory_unavailable") return reply;
    throw new DirectoryStoreError(`placement of conversation ${conversationId} answered ${reply.code} in prefer mode`);
  }

  /** Registers a cell as active, or refreshes a known cell's weight (its state is kept). */
  async registerCell(cellId: string, weight: number): Promise<RegistrationResult> {
    assertId(isCellId(cellId), "cell id", cellId);
    if (!Number.isSafeInteger(weight) || weight < 1 || weight > 1_000_000) throw new TypeError(`invalid cell weight ${weight}`);
    const reply = await this.call(`register cell ${cellId}`, () =>
      registrationScript.run(this.redis, [this.cellsKey], [cellId, String(weight), String(cellsMax)]),
    );
    const [status, rawRegistry] = asArray(reply) ?? [];
    if (status === "registry_full") {
      return { ok: false, code: "invalid_field", message: `cellId: the registry already holds the maximum of ${cellsMax} cells` };
    }
    const flat = asArray(rawRegistry);
    if (status !== "registered" || flat === undefined) throw new DirectoryStoreError(`registration script replied ${describe(reply)}`);
    return { ok: true, cells: decodeRegistry(registryFromFlat(flat), this.cellsKey) };
  }

  /** Sets a registered cell's state (its weight is kept): draining cells receive no new entries. */
  async setCellState(cellId: string, state: CellState): Promise<CellStateResult> {
    assertId(isCellId(cellId), "cell id", cellId);
    const reply = await this.call(`set state of cell ${cellId}`, () => cellStateScript.run(this.redis, [this.cellsKey], [cellId, state]));
    const [status, rawRegistry] = asArray(reply) ?? [];
    if (status === "unknown_cell") return { ok: false, code: "unknown_cell", message: `cell ${cellId} is not registered` };
    if (status === "undecodable")
      throw new DirectoryStoreError(`${this.cellsKey} field ${cellId} does not decode: ${describe(rawRegistry)}`);
    const flat = asArray(rawRegistry);
    if (status !== "set" || flat === undefined) throw new DirectoryStoreError(`cell state script replied ${describe(reply)}`);
    return { ok: true, cells: decodeRegistry(registryFromFlat(flat), this.cellsKey) };
  }

  /**
   * Moves an entry from fromCellId at expectedEpoch to toCellId with the next epoch, and its id between the
   * two cells' sets, atomically. A repeat of a move that already happened answers the entry unchanged
   * (moved: false); a target that is not registered answers unknown_cell, a draining one invalid_field; an
   * entry elsewhere or at another epoch answers entry_changed.
   */
  async moveEntry(move: MoveEntryInput): Promise<MoveResult> {
    const { kind, id, fromCellId, toCellId, expectedEpoch } = move;
    // The request decoder checks ids against a pattern common to both kinds; a conversation id has a
    // stricter one, and an id that fits neither must not reach a key.
    if (!(kind === "user" ? isUserId(id) : isConversationId(id))) {
      return { ok: false, code: "invalid_field", message: `id: not a valid ${kind} id` };
    }
    assertId(isCellId(fromCellId), "cell id", fromCellId);
    assertId(isCellId(toCellId), "cell id", toCellId);
    if (fromCellId === toCellId)
      return { ok: false, code: "invalid_field", message: "toCellId: the entry would move to the cell it is on" };
    if (!Number.isSafeInteger(expectedEpoch) || expectedEpoch < 1 || expectedEpoch >= Number.MAX_SAFE_INTEGER) {
      return { ok: false, code: "invalid_field", message: `expectedEpoch: ${expectedEpoch} leaves no next epoch` };
    }
    const key = this.entryKey(kind, id);
    const nextEpoch = String(expectedEpoch + 1);
    const reply = await this.call(`move of ${key}`, () =>
      moveScript.run(
        this.redis,
        [key, this.cellsKey, this.cellSetKey(fromCellId, kind), this.cellSetKey(toCellId, kind), this.generationKey],
        [id, fromCellId, toCellId, String(expectedEpoch), nextEpoch],
      ),
    );
    const [status, rawCellId, rawEpoch] = asArray(reply) ?? [];
    switch (status) {
      case "moved":
      case "already_moved": {
        const entry = decodeEntry(kind, id, rawCellId, rawEpoch, key);
        // A repeat waits too: its first answer may be the one that was lost for want of replicas.
        const unreplicated = await this.unreplicated(`move of ${kind} ${id}`);
        return unreplicated ?? { ok: true, entry, moved: status === "moved" };
      }
      case "not_found":
        return { ok: false, code: "not_found", message: `no entry for ${kind} ${id}` };
      case "forgotten":
        this.forgotten();
        return forgottenRefusal(`move of ${kind} ${id}`);
      case "unknown_cell":
        return { ok: false, code: "unknown_cell", message: `cell ${toCellId} is not registered` };
      case "draining":
        return { ok: false, code: "invalid_field", message: `toCellId: cell ${toCellId} is draining` };
      case "undecodable":
        throw new DirectoryStoreError(`${this.cellsKey} field ${toCellId} does not decode: ${describe(rawCellId)}`);
      case "entry_changed": {
        const current = decodeEntry(kind, id, rawCellId, rawEpoch, key);
        return {
          ok: false,
          code: "entry_changed",
          message: `${kind} ${id} is on cell ${current.cellId} at epoch ${current.epoch}, not on ${fromCellId} at epoch ${expectedEpoch}`,
        };
      }
      default:
        throw new DirectoryStoreError(`move script replied ${describe(reply)}`);
    }
  }

  /**
   * One page of the ids of `kind` homed on `cellId` (SSCAN with `cursor` and COUNT `count`; a returned
   * cursor "0" ends the scan). SSCAN's guarantee: an id on the cell for the whole scan comes at least once,
   * maybe more; one that moves meanwhile may come or not.
   */
  async cellEntries(cellId: string, kind: DirectoryEntryKind, cursor: string, count: number): Promise<CellEntriesPage> {
    assertId(isCellId(cellId), "cell id", cellId);
    if (!/^[0-9]{1,20}$/.test(cursor)) throw new TypeError(`invalid SSCAN cursor ${JSON.stringify(cursor.slice(0, 40))}`);
    if (!Number.isSafeInteger(count) || count < 1 || count > cellEntriesPageMax) throw new TypeError(`invalid SSCAN count ${count}`);
    // A cell without entries has no set; the registry tells an empty cell from one that does not exist.
    const registered = await this.call(`HEXISTS ${this.cellsKey}`, () => this.redis.hexists(this.cellsKey, cellId));
    if (registered === 0) return { ok: false, code: "unknown_cell", message: `cell ${cellId} is not registered` };
    const key = this.cellSetKey(cellId, kind);
    const [nextCursor, members] = await this.call(`SSCAN ${key}`, () => this.redis.sscan(key, cursor, "COUNT", count));
    if (members.length > cellEntriesReplyIdsMax) {
      throw new DirectoryStoreError(
        `SSCAN of ${key} returned ${members.length} ids, more than a reply may carry (${cellEntriesReplyIdsMax})`,
      );
    }
    const isId = kind === "user" ? isUserId : isConversationId;
    for (const member of members) {
      if (!isId(member)) throw new DirectoryStoreError(`${key} holds an invalid ${kind} id ${describe(member)}`);
    }
    return { ok: true, ids: members, cursor: nextCursor };
  }

  /** Every registered cell, sorted by id. */
  async listCells(): Promise<CellRecord[]> {
    const registry = await this.call(`HGETALL ${this.cellsKey}`, () => this.redis.hgetall(this.cellsKey));
    return decodeRegistry(registry, this.cellsKey);
  }

  /** Unlinks every key of the namespace: for tests and the launcher's cleanup, never for serving. */
  async destroyNamespace(): Promise<number> {
    const pattern = `${this.prefix}*`;
    let cursor = "0";
    let unlinked = 0;
    for (let round = 0; round < destroyScanRoundsMax; round++) {
      const [nextCursor, keys] = await this.call(`SCAN ${pattern}`, () =>
        this.redis.scan(cursor, "MATCH", pattern, "COUNT", destroyScanCount),
      );
      if (keys.length > 0) unlinked += await this.call(`UNLINK ${pattern}`, () => this.redis.unlink(...keys));
      cursor = nextCursor;
      if (cursor === "0") return unlinked;
    }
    throw new DirectoryStoreError(`SCAN of ${pattern} did not finish within ${destroyScanRoundsMax} rounds`);
  }

  private async place(
    kind: DirectoryEntryKind,
    id: string,
    mode: "prefer" | "require",
    cellId: string,
    random: number,
  ): Promise<PlacedEntry | DirectoryRefusal<"no_cell_available" | "unknown_cell" | "directory_unavailable">> {
    assertRandom(random);
    const key = this.entryKey(kind, id);
    const reply = await this.call(`placement of ${key}`, () =>
      placementScript.run(
        this.redis,
        [key, this.cellsKey, this.generationKey],
        [mode, cellId, String(random), this.cellSetPrefix, cellSetSuffixes[kind], id],
      ),
    );
    const outcome = this.placementOutcome(kind, id, key, cellId, reply);
    if (!outcome.ok || !outcome.placed) return outcome;
    return (await this.unreplicated(`placement of ${kind} ${id}`)) ?? outcome;
  }

  /**
   * What one placement reply (placementScript's, or one user's of userPlacementsScript) says, before any
   * wait for the replicas: the entry, placed or existing, or the refusal. `cellId` is the cell a require
   * mode named (for its unknown_cell).
   */
  private placementOutcome(
    kind: DirectoryEntryKind,
    id: string,
    key: string,
    cellId: string,
    reply: unknown,
  ): PlacedEntry | DirectoryRefusal<"no_cell_available" | "unknown_cell" | "directory_unavailable"> {
    const [status, rawCellId, rawEpoch] = asArray(reply) ?? [];
    switch (status) {
      case "existing":
      case "placed":
        return { ok: true, entry: decodeEntry(kind, id, rawCellId, rawEpoch, key), placed: status === "placed" };
      case "no_cell_available":
        return { ok: false, code: "no_cell_available", message: `no active cell is registered to place ${kind} ${id}` };
      case "unknown_cell":
        return { ok: false, code: "unknown_cell", message: `cell ${cellId} is not registered` };
      case "forgotten":
        this.forgotten();
        return forgottenRefusal(`placement of ${kind} ${id}`);
      default:
        throw new DirectoryStoreError(`placement of ${kind} ${id}: the script replied ${describe(reply)}`);
    }
  }

  /**
   * Waits (Redis WAIT) for replicaAcksMin replicas to hold this connection's writes so far; undefined when
   * they do (or none is asked for), else the retryable refusal to answer instead. The write stays on the
   * primary: the retry finds it as an existing entry.
   */
  private async unreplicated(what: string): Promise<DirectoryRefusal<"directory_unavailable"> | undefined> {
    if (this.replicaAcksMin === 0) return undefined;
    const acknowledged = await this.call(`WAIT after ${what}`, () => this.redis.wait(this.replicaAcksMin, this.replicaWaitMs));
    if (acknowledged >= this.replicaAcksMin) return undefined;
    return {
      ok: false,
      code: "directory_unavailable",
      message: `${what}: ${acknowledged} of the ${this.replicaAcksMin} Redis replicas required acknowledged it within ${this.replicaWaitMs} ms`,
    };
  }

  private entryKey(kind: DirectoryEntryKind, id: string): string {
    return `${this.prefix}${kind}:${id}`;
  }

  /** The set of the ids of `kind` homed on `cellId`: `<namespace>:cell:<cellId>:users` or `:conversations`. */
  private cellSetKey(cellId: string, kind: DirectoryEntryKind): string {
    return `${this.cellSetPrefix}${cellId}:${cellSetSuffixes[kind]}`;
  }

  private async call<T>(operation: string, work: () => Promise<T>): Promise<T> {
    try {
      return await work();
    } catch (error) {
      throw fromRedisError(error, operation);
    }
  }
}

/** Retryable: the rebuild that writes the marker back is under way (or starts now), and takes seconds. */
function forgottenRefusal(what: string): DirectoryRefusal<"directory_unavailable"> {
  return {
    ok: false,
    code: "directory_unavailable",
    message: `${what} refused: the directory's data is not known complete (no generation marker); it is being rebuilt from the cells`,
  };
}

function decodeEntry(kind: DirectoryEntryKind, id: string, rawCellId: unknown, rawEpoch: unknown, key: string): DirectoryEntry {
  const cellId = decode(cellIdDecoder, rawCellId);
  if (!cellId.ok) throw new DirectoryStoreError(`${key} has an invalid cellId ${describe(rawCellId)}`);
  if (typeof rawEpoch !== "string" || !epochPattern.test(rawEpoch) || !Number.isSafeInteger(Number(rawEpoch))) {
    throw new DirectoryStoreError(`${key} has an invalid epoch ${describe(rawEpoch)}`);
  }
  return { kind, id, cellId: cellId.value, epoch: Number(rawEpoch) };
}

/** HGETALL as a script returns it (field, value, field, value…) as a record. */
function registryFromFlat(flat: readonly unknown[]): Record<string, unknown> {
  const registry: Record<string, unknown> = {};
  for (let index = 0; index + 1 < flat.length; index += 2) {
    const field = flat[index];
    if (typeof field !== "string") throw new DirectoryStoreError(`registry field ${describe(field)} is not a string`);
    registry[field] = flat[index + 1];
  }
  return registry;
}

function decodeRegistry(registry: Record<string, unknown>, key: string): CellRecord[] {
  const cells: CellRecord[] = [];
  for (const [field, raw] of Object.entries(registry)) {
    const cellId = decode(cellIdDecoder, field);
    if (!cellId.ok) throw new DirectoryStoreError(`${key} has an invalid cell id ${describe(field)}`);
    if (typeof raw !== "string") throw new DirectoryStoreError(`${key} field ${field} is not a string`);
    const parsed = parseJson(raw);
    const value = parsed.ok ? decode(cellValue, parsed.value) : parsed;
    if (!value.ok) throw new DirectoryStoreError(`${key} field ${field}: ${value.failure.path} ${value.failure.reason}`);
    cells.push({ cellId: cellId.value, weight: value.value.weight, state: value.value.state });
  }
  return cells.sort((left, right) => (left.cellId < right.cellId ? -1 : left.cellId > right.cellId ? 1 : 0));
}

/** The caller's random number, which the scripts turn into a weighted pick: in [0, 1). */
function assertRandom(random: number): void {
  if (!Number.isFinite(random) || random < 0 || random >= 1) throw new TypeError(`random must be in [0, 1), got ${random}`);
}

// Ids reach Redis keys only after the service decoded the request; a bad one here is a programmer error.
function assertId(ok: boolean, what: string, value: string): void {
  if (!ok) throw new TypeError(`invalid ${what} for a Redis key: ${JSON.stringify(value.slice(0, 80))}`);
}

function asArray(value: unknown): readonly unknown[] | undefined {
  return Array.isArray(value) ? (value as readonly unknown[]) : undefined;
}

function describe(value: unknown): string {
  const text = JSON.stringify(value) ?? String(value);
  return text.length > 200 ? `${text.slice(0, 200)}…` : text;
}
