// An Operations that records what it was asked and answers from canned reports, for the admin API's tests:
// the HTTP boundary (auth, routing, parsing, error mapping, streaming) without a deployment behind it.
import type { DirectoryEntryKind } from "@cellwire/protocol";
import type { DrainProgress } from "../src/migration.ts";
import type {
  AddCellProgress,
  AddCellReport,
  CellsReport,
  DeadLettersReport,
  DrainSummary,
  MigrateReport,
  Operations,
  RedriveReport,
  RevokeReport,
  RingReport,
  WhereisReport,
} from "../src/operations.ts";

export type OperatorCall = { readonly operation: string; readonly arguments: readonly unknown[] };

export class RecordingOperations implements Operations {
  readonly calls: OperatorCall[] = [];
  /** Set to make the next call of any operation throw it (after its progress, for the streaming ones). */
  failure: Error | undefined;
  /** Progress the streaming operations report before they answer or fail. */
  drainProgress: DrainProgress[] = [{ movedUsers: 1, movedConversations: 0, failed: 0, elapsedMs: 12.5, pass: 1 }];
  addCellProgress: AddCellProgress[] = [{ stage: "starting" }, { stage: "started", workerIds: ["c-1"] }];

  private record(operation: string, ...values: unknown[]): void {
    this.calls.push({ operation, arguments: values });
    const failure = this.failure;
    if (failure !== undefined) {
      this.failure = undefined;
      throw failure;
    }
  }

  cells(): Promise<CellsReport> {
    return this.answer("cells", [], () => ({ namespace: "ns", cells: [{ cellId: "a", weight: 100, state: "active" as const }] }));
  }
  ring(cellId: string): Promise<RingReport> {
    return this.answer("ring", [cellId], () => ({
      cellId,
      namespace: "ns",
      members: [{ workerId: "a-1", leaseAgeMs: 10, leaseMs: 2000, live: true, share: 1, subject: "ns.cell.a.worker.a-1" }],
    }));
  }
  whereis(userId: string): Promise<WhereisReport> {
    return this.answer("whereis", [userId], () =>
      userId === "nobody" ? { userId, placed: false as const } : { userId, placed: true as const, cellId: "a", epoch: 3 },
    );
  }
  migrate(kind: DirectoryEntryKind, id: string, toCellId: string): Promise<MigrateReport> {
    return this.answer("migrate", [kind, id, toCellId], () => ({
      kind,
      id,
      fromCellId: "a",
      toCellId,
      epoch: 2,
      pauseMs: 4,
      copiedItems: 7,
      alreadyMoved: false,
      tookMs: 30,
    }));
  }
  drain(cellId: string, concurrency: number, onProgress: (progress: DrainProgress) => void): Promise<DrainSummary> {
    for (const progress of this.drainProgress) onProgress(progress);
    return this.answer("drain", [cellId, concurrency], () => ({
      cellId,
      movedUsers: 1,
      movedConversations: 0,
      elapsedMs: 20,
      pauseP50Ms: 3,
      pauseP99Ms: 3,
      pauseMaxMs: 3,
    }));
  }
  addCell(cellId: string, workers: number, weight: number, onProgress: (progress: AddCellProgress) => void): Promise<AddCellReport> {
    for (const progress of this.addCellProgress) onProgress(progress);
    return this.answer("addCell", [cellId, workers, weight], () => ({ cellId, weight, state: "active", workerIds: ["c-1"] }));
  }
  revoke(userId: string): Promise<RevokeReport> {
    return this.answer("revoke", [userId], () => ({ userId, revokedAtMs: 1_700_000_000_000 }));
  }
  deadLetters(cellId: string | undefined, rowsMax: number): Promise<DeadLettersReport> {
    return this.answer("deadLetters", [cellId, rowsMax], () => ({
      namespace: "ns",
      cellIds: ["a"],
      deadLetters: [],
      truncatedCellIds: [],
      unreachableCellIds: [],
      problems: [],
    }));
  }
  redrive(cellId: string, selection: readonly number[] | "all"): Promise<RedriveReport> {
    return this.answer("redrive", [cellId, selection], () => ({ cellId, redrivenRows: 2 }));
  }

  private answer<T>(operation: string, values: unknown[], report: () => T): Promise<T> {
    try {
      this.record(operation, ...values);
    } catch (error) {
      return Promise.reject(error instanceof Error ? error : new Error(String(error)));
    }
    return Promise.resolve(report());
  }
}
