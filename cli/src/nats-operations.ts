// The operator's work done over NATS as the admin user (docs/decisions/0015): what `cellwire ring`, `cells`,
// `whereis`, `migrate`, `drain`, `add-cell`, `revoke` and `dead-letters` do without --admin-url, and what
// the admin HTTP API does for them with it. Reports are values; printing is the commands' business.
import { connect, type NatsConnection } from "@nats-io/transport-node";
import {
  anonymousNatsAccess,
  CellwireError,
  decodeMessage,
  DirectoryClient,
  encodeJson,
  isNoResponders,
  isTimeout,
  natsConnectOptions,
  openExistingMembershipBucket,
  Ring,
  sleep,
  UnavailableError,
  type NatsAccess,
} from "@cellwire/cluster";
import {
  deadLettersPageLimitMax,
  isCellId,
  isConversationId,
  isUserId,
  redriveIdsMax,
  revocationsSubject,
  topologyReply,
  topologySubject,
  workerLease,
  type CellReply,
  type CellRequest,
  type DeadLetterSummary,
  type DirectoryEntryKind,
  type SessionRevoke,
  type WorkerLease,
} from "@cellwire/protocol";
import { drainCell, MigrationError, migrateKey, migrationTools, type DrainProgress, type MigrationTools } from "./migration.ts";
import {
  OperationError,
  type AddCellProgress,
  type AddCellReport,
  type CellsReport,
  type DeadLetterRow,
  type DeadLettersReport,
  type DrainSummary,
  type MigrateReport,
  type Operations,
  type OperationsSession,
  type RedriveReport,
  type RevokeReport,
  type RingMember,
  type RingReport,
  type WhereisReport,
} from "./operations.ts";
import { percentile } from "./statistics.ts";

/** How long add-cell waits for the launcher to start the workers (each creates and migrates a database). */
const addCellStartTimeoutMs = 120_000;
/** How long add-cell then waits for the cell to be registered and its ring to hold every worker. */
const addCellReadyDeadlineMs = 30_000;
const addCellPollMs = 200;
const directoryTimeoutMs = 5000;
/** Pages one redrive --all walks before it stops (and says so): 2,000,000 rows. */
const redriveAllPagesMax = 10_000;

export type NatsOperationsOptions = {
  readonly natsServers: readonly string[];
  readonly natsAccess?: NatsAccess;
  readonly namespace: string;
};

function invalid(message: string): OperationError {
  return new OperationError("invalid_input", message);
}

/** Operating errors of the services become operation errors with the message the commands always printed. */
function asOperationError(error: unknown): unknown {
  if (error instanceof OperationError) return error;
  if (error instanceof UnavailableError) return new OperationError("unavailable", error.message, { cause: error });
  if (error instanceof CellwireError || error instanceof MigrationError)
    return new OperationError("failed", error.message, { cause: error });
  return error;
}

export class NatsOperations implements Operations {
  #tools: MigrationTools | undefined;
  readonly #directory: DirectoryClient;

  constructor(
    private readonly connection: NatsConnection,
    private readonly namespace: string,
    private readonly nowMs: () => number = Date.now,
  ) {
    // cells and whereis ask only the directory: no router (and its membership watches) for them.
    this.#directory = new DirectoryClient(connection, namespace, directoryTimeoutMs);
  }

  /** A directory client and a router to every cell, made at first use (ring and revoke need neither). */
  private get tools(): MigrationTools {
    this.#tools ??= migrationTools(this.connection, this.namespace);
    return this.#tools;
  }

  /** Ends the router's watches; the connection is the caller's. */
  stop(): void {
    this.#tools?.stop();
    this.#tools = undefined;
  }

  private async run<T>(work: () => Promise<T>): Promise<T> {
    try {
      return await work();
    } catch (error) {
      throw asOperationError(error);
    }
  }

  /** A directory question; the directory not answering is said as the commands always said it. */
  private async askDirectory<T>(work: () => Promise<T>): Promise<T> {
    try {
      return await work();
    } catch (error) {
      if (!(error instanceof UnavailableError)) throw error;
      throw new OperationError("unavailable", `the directory of namespace ${this.namespace} did not answer (is the topology running?)`, {
        cause: error,
      });
    }
  }

  async cells(): Promise<CellsReport> {
    const cells = await this.askDirectory(() => this.#directory.listCells());
    return { namespace: this.namespace, cells: [...cells].sort((left, right) => (left.cellId < right.cellId ? -1 : 1)) };
  }

  /** The members as the membership bucket shows them, each lease's age by the server's timestamp, each share of the ring. */
  async ring(cellId: string): Promise<RingReport> {
    if (!isCellId(cellId)) throw invalid(`${JSON.stringify(cellId)} is not a cell id`);
    let bucket;
    try {
      bucket = await openExistingMembershipBucket(this.connection, this.namespace, cellId);
    } catch (error) {
      throw new OperationError("not_found", `cell ${cellId} has no membership bucket in namespace ${this.namespace} (never started?)`, {
        cause: error,
      });
    }
    const leases: { lease: WorkerLease; ageMs: number }[] = [];
    // The key listing is a consumer over the live bucket: a key renewed while it runs can come twice.
    const keys = new Set<string>();
    for await (const key of await bucket.keys("worker.>")) keys.add(key);
    for (const key of keys) {
      const entry = await bucket.get(key);
      if (entry === null || entry.operation !== "PUT") continue;
      const decoded = decodeMessage(workerLease, entry.value);
      if (decoded.ok) leases.push({ lease: decoded.value, ageMs: Math.max(0, this.nowMs() - entry.created.getTime()) });
    }
    const live = leases.filter(({ lease, ageMs }) => ageMs <= lease.leaseMs);
    const shares = new Ring(live.map(({ lease }) => lease.workerId)).shares();
    const members: RingMember[] = leases
      .map(({ lease, ageMs }) => ({
        workerId: lease.workerId,
        leaseAgeMs: ageMs,
        leaseMs: lease.leaseMs,
        live: ageMs <= lease.leaseMs,
        share: shares.get(lease.workerId) ?? 0,
        subject: lease.subject,
      }))
      .sort((left, right) => (left.workerId < right.workerId ? -1 : 1));
    return { cellId, namespace: this.namespace, members };
  }

  async whereis(userId: string): Promise<WhereisReport> {
    if (!isUserId(userId)) throw invalid(`${JSON.stringify(userId)} is not a user id`);
    const entry = await this.askDirectory(() => this.#directory.lookupUser(userId));
    return entry === undefined ? { userId, placed: false } : { userId, placed: true, cellId: entry.cellId, epoch: entry.epoch };
  }

  migrate(kind: DirectoryEntryKind, id: string, toCellId: string): Promise<MigrateReport> {
    if (kind === "user" ? !isUserId(id) : !isConversationId(id))
      return Promise.reject(invalid(`${JSON.stringify(id)} is not a ${kind} id`));
    if (!isCellId(toCellId)) return Promise.reject(invalid(`${JSON.stringify(toCellId)} is not a cell id`));
    return this.run(async () => {
      const startedAtMs = performance.now();
      const result = await migrateKey(this.tools, kind, id, toCellId);
      return { ...result, tookMs: Math.round(performance.now() - startedAtMs) };
    });
  }

  drain(cellId: string, concurrency: number, onProgress: (progress: DrainProgress) => void): Promise<DrainSummary> {
    if (!isCellId(cellId)) return Promise.reject(invalid(`${JSON.stringify(cellId)} is not a cell id`));
    return this.run(async () => {
      let report;
      try {
        report = await drainCell(this.tools, cellId, { concurrency, onProgress });
      } catch (error) {
        if (!(error instanceof MigrationError)) throw error;
        throw new OperationError("failed", `drain of cell ${cellId} is not complete: ${error.message}`, { cause: error });
      }
      return {
        cellId,
        movedUsers: report.movedUsers,
        movedConversations: report.movedConversations,
        elapsedMs: Math.round(report.elapsedMs),
        pauseP50Ms: percentile(report.pausesMs, 50) ?? 0,
        pauseP99Ms: percentile(report.pausesMs, 99) ?? 0,
        pauseMaxMs: percentile(report.pausesMs, 100) ?? 0,
      };
    });
  }

  /**
   * Asks the local topology launcher to start `workers` workers of a new cell, then waits until the
   * directory lists the cell as active and its ring holds them all.
   */
  addCell(cellId: string, workers: number, weight: number, onProgress: (progress: AddCellProgress) => void): Promise<AddCellReport> {
    if (!isCellId(cellId)) return Promise.reject(invalid(`${JSON.stringify(cellId)} is not a cell id`));
    return this.run(async () => {
      const tools = this.tools;
      const existing = (await tools.directory.listCells()).find((cell) => cell.cellId === cellId);
      if (existing !== undefined)
        throw new OperationError("conflict", `cell ${cellId} is already registered (${existing.state}, weight ${existing.weight})`);
      onProgress({ stage: "starting" });
      let raw;
      try {
        raw = await this.connection.request(
          topologySubject(this.namespace),
          encodeJson({ type: "topology.addCell", cellId, workers, weight }),
          { timeout: addCellStartTimeoutMs },
        );
      } catch (error) {
        if (!(isNoResponders(error) || isTimeout(error))) throw error;
        throw new OperationError(
          "unavailable",
          `no local topology of namespace ${this.namespace} answered. Start the cell's workers yourself ` +
            `(WORKER_CELL_ID=${cellId} WORKER_ID=${cellId}-1 WORKER_CELL_WEIGHT=${weight} npx tsx cells/src/main.ts, one per worker) and they register the cell.`,
          { cause: error },
        );
      }
      const reply = decodeMessage(topologyReply, raw.data);
      if (!reply.ok) throw new MigrationError(`the launcher answered something that does not decode: ${reply.reason}`);
      if (reply.value.type === "topology.error")
        throw new OperationError("failed", `the launcher could not start cell ${cellId}: ${reply.value.message}`);
      const workerIds = reply.value.workerIds;
      onProgress({ stage: "started", workerIds });
      const deadlineMs = performance.now() + addCellReadyDeadlineMs;
      for (;;) {
        const record = (await tools.directory.listCells()).find((cell) => cell.cellId === cellId);
        // The launcher answers once every worker is ready, which each is only after taking its lease.
        const live = record !== undefined && (await tools.router.hasLiveWorkers(cellId).catch(() => false));
        if (record !== undefined && record.state === "active" && live)
          return { cellId, weight: record.weight, state: record.state, workerIds };
        if (performance.now() > deadlineMs)
          throw new OperationError(
            "failed",
            `cell ${cellId} was not registered with ${workerIds.length} live workers within ${addCellReadyDeadlineMs} ms`,
          );
        await sleep(addCellPollMs);
      }
    });
  }

  /**
   * Publishes a revocation at this machine's wall clock and waits until the NATS server has it. Edges
   * receive it as a core publish: one that is disconnected at the time misses it.
   */
  async revoke(userId: string): Promise<RevokeReport> {
    if (!isUserId(userId)) throw invalid(`${JSON.stringify(userId)} is not a user id`);
    const revokedAtMs = Date.now();
    const revoke: SessionRevoke = { type: "session.revoke", userId, revokedAtMs };
    this.connection.publish(revocationsSubject(this.namespace), encodeJson(revoke));
    await this.connection.flush();
    return { userId, revokedAtMs };
  }

  deadLetters(cellId: string | undefined, rowsMax: number): Promise<DeadLettersReport> {
    if (cellId !== undefined && !isCellId(cellId)) return Promise.reject(invalid(`${JSON.stringify(cellId)} is not a cell id`));
    return this.run(async () => {
      const tools = this.tools;
      const cellIds = cellId !== undefined ? [cellId] : (await tools.directory.listCells()).map((cell) => cell.cellId).sort();
      const deadLetters: DeadLetterRow[] = [];
      const truncatedCellIds: string[] = [];
      const problems: { cellId: string; message: string }[] = [];
      for (const id of cellIds) {
        try {
          const listed = await cellDeadLetters(tools, id, rowsMax);
          deadLetters.push(...listed.deadLetters.map((deadLetter) => ({ cellId: id, ...deadLetter })));
          if (listed.more) truncatedCellIds.push(id);
        } catch (error) {
          if (!(error instanceof UnavailableError || error instanceof MigrationError)) throw error;
          problems.push({ cellId: id, message: error.message });
        }
      }
      return {
        namespace: this.namespace,
        cellIds,
        deadLetters,
        truncatedCellIds,
        unreachableCellIds: problems.map((problem) => problem.cellId),
        problems,
      };
    });
  }

  /**
   * Moves dead letters of `cellId` back to its outbox: the named ids (each with the rest of its
   * (conversation, recipient) group), or with "all" every one, page by page.
   */
  redrive(cellId: string, selection: readonly number[] | "all"): Promise<RedriveReport> {
    if (!isCellId(cellId)) return Promise.reject(invalid(`${JSON.stringify(cellId)} is not a cell id`));
    return this.run(async () => {
      const tools = this.tools;
      let rows = 0;
      const redrive = async (ids: readonly number[]): Promise<void> => {
        const reply = await ask(tools, cellId, { type: "cell.redriveDeadLetters", ids: [...ids] });
        if (reply.type !== "cell.redriven") throw new MigrationError(`cell ${cellId} answered ${reply.type} to cell.redriveDeadLetters`);
        rows += reply.rows;
      };
      if (selection === "all") {
        // A cursor: rows that fail again and come back as dead letters keep their ids, so they are not met twice.
        let afterId = 0;
        for (let page = 0; ; page++) {
          if (page === redriveAllPagesMax)
            throw new MigrationError(`stopped after ${redriveAllPagesMax} pages (${rows} rows); run it again for the rest`);
          const reply = await ask(tools, cellId, {
            type: "cell.deadLetters",
            afterId,
            limit: Math.min(deadLettersPageLimitMax, redriveIdsMax),
          });
          if (reply.type !== "cell.deadLetters") throw new MigrationError(`cell ${cellId} answered ${reply.type} to cell.deadLetters`);
          const last = reply.deadLetters.at(-1);
          if (last === undefined) break;
          await redrive(reply.deadLetters.map((deadLetter) => deadLetter.id));
          afterId = last.id;
        }
      } else {
        for (let start = 0; start < selection.length; start += redriveIdsMax) await redrive(selection.slice(start, start + redriveIdsMax));
      }
      return { cellId, redrivenRows: rows };
    });
  }
}

/** What a cell answered, or why it could not be asked. */
async function ask(tools: MigrationTools, cellId: string, request: CellRequest): Promise<CellReply> {
  const reply = await tools.router.toCell(cellId, request);
  if (reply.type === "cell.error") throw new MigrationError(`cell ${cellId} answered ${reply.code}: ${reply.message}`);
  return reply;
}

/** Up to `rowsMax` dead letters of one cell, in id order (pages of deadLettersPageLimitMax). */
async function cellDeadLetters(
  tools: MigrationTools,
  cellId: string,
  rowsMax: number,
): Promise<{ deadLetters: DeadLetterSummary[]; more: boolean }> {
  const deadLetters: DeadLetterSummary[] = [];
  let afterId = 0;
  while (deadLetters.length < rowsMax) {
    const limit = Math.min(deadLettersPageLimitMax, rowsMax - deadLetters.length);
    const reply = await ask(tools, cellId, { type: "cell.deadLetters", afterId, limit });
    if (reply.type !== "cell.deadLetters") throw new MigrationError(`cell ${cellId} answered ${reply.type} to cell.deadLetters`);
    deadLetters.push(...reply.deadLetters);
    const last = reply.deadLetters.at(-1);
    if (last === undefined || reply.deadLetters.length < limit) return { deadLetters, more: false };
    afterId = last.id;
  }
  const next = await ask(tools, cellId, { type: "cell.deadLetters", afterId, limit: 1 });
  return { deadLetters, more: next.type === "cell.deadLetters" && next.deadLetters.length > 0 };
}

/** Connects as the admin user (named `name` on the server) for one command's run. */
export async function openNatsOperations(options: NatsOperationsOptions, name: string): Promise<OperationsSession> {
  const connection = await connect({
    ...(await natsConnectOptions(options.natsAccess ?? anonymousNatsAccess("admin"))),
    servers: [...options.natsServers],
    name,
  });
  const operations = new NatsOperations(connection, options.namespace);
  return {
    operations,
    close: async () => {
      operations.stop();
      await connection.close();
    },
  };
}
