// What an operator can do to a running deployment, as one interface with two implementations: over NATS as
// the admin user (nats-operations.ts, what the commands did alone before) and over the admin HTTP API
// (admin-api/http-operations.ts, for a deployment that is not the local launcher). The commands print a
// report the same way whichever implementation produced it; the admin API serves the NATS one
// (docs/decisions/0035-admin-http-api.md).
import type { CellRecord, DeadLetterSummary, DirectoryEntryKind } from "@cellwire/protocol";
import type { DrainProgress } from "./migration.ts";

/**
 * Why an operation did not produce its report. `invalid_input`: the caller named something that cannot be
 * (a malformed id), and the command exits 2; the others exit 1: `not_found` (a cell never started),
 * `conflict` (a cell already registered), `unavailable` (the directory, a cell or the launcher did not
 * answer), `failed` (the operation ran and did not complete: a drain that left keys, a migration refused).
 */
export type OperationErrorCode = "invalid_input" | "not_found" | "conflict" | "unavailable" | "failed";

export const operationErrorCodes: readonly OperationErrorCode[] = ["invalid_input", "not_found", "conflict", "unavailable", "failed"];

/** An expected failure of an operation; `message` is the sentence the command prints after "cellwire: ". */
export class OperationError extends Error {
  override readonly name = "OperationError";
  constructor(
    readonly code: OperationErrorCode,
    message: string,
    options?: ErrorOptions,
  ) {
    super(message, options);
  }
}

export type CellsReport = { readonly namespace: string; readonly cells: readonly CellRecord[] };

export type RingMember = {
  readonly workerId: string;
  readonly leaseAgeMs: number;
  readonly leaseMs: number;
  readonly live: boolean;
  readonly share: number;
  readonly subject: string;
};
export type RingReport = { readonly cellId: string; readonly namespace: string; readonly members: readonly RingMember[] };

export type WhereisReport =
  | { readonly userId: string; readonly placed: false }
  | { readonly userId: string; readonly placed: true; readonly cellId: string; readonly epoch: number };

export type MigrateReport = {
  readonly kind: DirectoryEntryKind;
  readonly id: string;
  readonly fromCellId: string;
  readonly toCellId: string;
  readonly epoch: number;
  readonly pauseMs: number;
  readonly copiedItems: number;
  readonly alreadyMoved: boolean;
  readonly tookMs: number;
};

export type DrainSummary = {
  readonly cellId: string;
  readonly movedUsers: number;
  readonly movedConversations: number;
  readonly elapsedMs: number;
  readonly pauseP50Ms: number;
  readonly pauseP99Ms: number;
  readonly pauseMaxMs: number;
};

/** What add-cell reports while it waits: the launcher was asked, then it started the workers. */
export type AddCellProgress = { readonly stage: "starting" } | { readonly stage: "started"; readonly workerIds: readonly string[] };
export type AddCellReport = {
  readonly cellId: string;
  readonly weight: number;
  readonly state: string;
  readonly workerIds: readonly string[];
};

export type RevokeReport = { readonly userId: string; readonly revokedAtMs: number };

export type DeadLetterRow = DeadLetterSummary & { readonly cellId: string };
export type DeadLettersReport = {
  readonly namespace: string;
  /** The cells asked: the one named, or every registered cell. */
  readonly cellIds: readonly string[];
  readonly deadLetters: readonly DeadLetterRow[];
  readonly truncatedCellIds: readonly string[];
  readonly unreachableCellIds: readonly string[];
  /** Why each unreachable cell could not be read, in the same order. */
  readonly problems: readonly { readonly cellId: string; readonly message: string }[];
};

export type RedriveReport = { readonly cellId: string; readonly redrivenRows: number };

export interface Operations {
  cells(): Promise<CellsReport>;
  ring(cellId: string): Promise<RingReport>;
  whereis(userId: string): Promise<WhereisReport>;
  migrate(kind: DirectoryEntryKind, id: string, toCellId: string): Promise<MigrateReport>;
  /** Marks the cell draining and moves everything out; `onProgress` after each page. */
  drain(cellId: string, concurrency: number, onProgress: (progress: DrainProgress) => void): Promise<DrainSummary>;
  addCell(cellId: string, workers: number, weight: number, onProgress: (progress: AddCellProgress) => void): Promise<AddCellReport>;
  revoke(userId: string): Promise<RevokeReport>;
  /** At most `rowsMax` dead letters per cell; a cell that cannot be read is reported, not thrown. */
  deadLetters(cellId: string | undefined, rowsMax: number): Promise<DeadLettersReport>;
  redrive(cellId: string, selection: readonly number[] | "all"): Promise<RedriveReport>;
}

/** The operations for one command's run; `close` ends its connection. */
export type OperationsSession = { readonly operations: Operations; close(): Promise<void> };
