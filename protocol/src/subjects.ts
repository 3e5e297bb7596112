// NATS subjects, KV bucket names, Redis key prefixes and database names, all derived from a namespace so
// that deployments (and tests) never collide. Callers MUST pass ids already checked by ids.ts; the
// functions assert it again because a bad id here is a programmer error that could widen a subscription.
import { isCellId, isNamespace, isUserId, isWorkerId } from "./ids.ts";

function assertToken(ok: boolean, what: string, value: string): void {
  if (!ok) throw new TypeError(`invalid ${what} for a subject: ${JSON.stringify(value.slice(0, 80))}`);
}

/**
 * The base of a worker's subjects, as its lease names it (`WorkerLease.subject`). Nothing is published on
 * the base itself: requests go to one of its channel subjects (workerRequestSubject).
 */
export function workerSubject(namespace: string, cellId: string, workerId: string): string {
  assertToken(isNamespace(namespace), "namespace", namespace);
  assertToken(isCellId(cellId), "cell id", cellId);
  assertToken(isWorkerId(workerId), "worker id", workerId);
  return `${namespace}.cell.${cellId}.worker.${workerId}`;
}

/**
 * Who may ask a worker for what (docs/decisions/0015): NATS permissions are per subject, so each caller
 * kind has a subject of its own under the worker's base: `edge` for the requests an edge makes for its
 * authenticated users, `peer` for worker to worker (mailbox relays, migration imports), `admin` for the
 * operator's requests (cell.migrate, cell.stats, cell.deadLetters, cell.redriveDeadLetters). A worker refuses a request kind on another channel.
 */
export type WorkerChannel = "edge" | "peer" | "admin";
export const workerChannels: readonly WorkerChannel[] = ["edge", "peer", "admin"];

/** A worker's subject per channel, built once per membership change rather than per request. */
export type WorkerRequestSubjects = Readonly<Record<WorkerChannel, string>>;

/** The subjects under a base that passed the lease decoder or workerSubject (no wildcard can reach here). */
export function workerRequestSubjects(baseSubject: string): WorkerRequestSubjects {
  assertToken(/^[A-Za-z0-9_.-]+$/.test(baseSubject), "worker subject", baseSubject);
  return { edge: `${baseSubject}.edge`, peer: `${baseSubject}.peer`, admin: `${baseSubject}.admin` };
}

export function workerRequestSubject(namespace: string, cellId: string, workerId: string, channel: WorkerChannel): string {
  return workerRequestSubjects(workerSubject(namespace, cellId, workerId))[channel];
}

/**
 * Where a directory rebuilding its store asks one cell what it holds (cell.inventory, docs/decisions/0023).
 * Every worker of the cell subscribes in one queue group: they share the cell's database, so any answers.
 */
export function cellInventorySubject(namespace: string, cellId: string): string {
  assertToken(isNamespace(namespace), "namespace", namespace);
  assertToken(isCellId(cellId), "cell id", cellId);
  return `${namespace}.cell.${cellId}.inventory`;
}

/**
 * Every live delivery (delivery.batch), read by every edge (docs/decisions/0011). Only workers may
 * publish here (docs/decisions/0015): a delivery's seq advances a session's cursor.
 */
export function deliveriesSubject(namespace: string): string {
  assertToken(isNamespace(namespace), "namespace", namespace);
  return `${namespace}.deliveries`;
}

export function directorySubject(namespace: string): string {
  assertToken(isNamespace(namespace), "namespace", namespace);
  return `${namespace}.directory.request`;
}

export function directoryChangesSubject(namespace: string): string {
  assertToken(isNamespace(namespace), "namespace", namespace);
  return `${namespace}.directory.changed`;
}

/** The membership bucket of a cell (JetStream KV bucket names allow [A-Za-z0-9_-]). */
export function membershipBucket(namespace: string, cellId: string): string {
  assertToken(isNamespace(namespace), "namespace", namespace);
  assertToken(isCellId(cellId), "cell id", cellId);
  return `${namespace}_members_${cellId}`;
}

export function leaseKey(workerId: string): string {
  assertToken(isWorkerId(workerId), "worker id", workerId);
  return `worker.${workerId}`;
}

export function redisPrefix(namespace: string): string {
  assertToken(isNamespace(namespace), "namespace", namespace);
  return `${namespace}:`;
}

/** One Postgres database per cell. */
export function cellDatabaseName(namespace: string, cellId: string): string {
  assertToken(isNamespace(namespace), "namespace", namespace);
  assertToken(isCellId(cellId), "cell id", cellId);
  return `${namespace}_cell_${cellId}`;
}

/** Typing indicators between edges (a delivery.batch with typing only); every edge publishes and subscribes. */
export function typingSubject(namespace: string): string {
  assertToken(isNamespace(namespace), "namespace", namespace);
  return `${namespace}.typing`;
}

/** Presence claims between edges (PresenceMessage); every edge publishes and subscribes. */
export function presenceSubject(namespace: string): string {
  assertToken(isNamespace(namespace), "namespace", namespace);
  return `${namespace}.presence`;
}

/** Requests to a local topology launcher (`cellwire up`, `npm start`): add a cell's workers at runtime. */
export function topologySubject(namespace: string): string {
  assertToken(isNamespace(namespace), "namespace", namespace);
  return `${namespace}.topology.control`;
}

/** Session revocations (SessionRevoke): an operator publishes, every edge subscribes. */
export function revocationsSubject(namespace: string): string {
  assertToken(isNamespace(namespace), "namespace", namespace);
  return `${namespace}.sessions.revoke`;
}
