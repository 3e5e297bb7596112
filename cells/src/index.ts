// @cellwire/cells: the cell worker, startable in-process, and its storage.
export { startWorker, type RunningWorker } from "./worker.ts";
export { loadWorkerConfig, type LoadedWorkerConfig, type WorkerConfig } from "./config.ts";
// The worker's metrics, for a check of what a deployment's dashboards and alerts name (cli/test/deployment-map.ts).
export { createWorkerCounters, registerWorkerGauges, type WorkerGaugeSources } from "./worker-metrics.ts";
export { dropCellDatabase, ensureCellDatabase, defaultPostgresAdminUrl, databaseUrl } from "./store/database.ts";
export { PostgresConversationStore } from "./store/postgres-store.ts";
export { PostgresUnavailableError, StoreRowError } from "./store/errors.ts";
export type {
  AddMembersInput,
  AppendMailboxResult,
  AppendMessageInput,
  AppendMessageResult,
  ConversationResult,
  ConversationStore,
  CreateGroupInput,
  HistoryInput,
  HistoryResult,
  MailboxPage,
  MailboxPageInput,
  OpenDirectInput,
  OutboxEntry,
  OutboxPage,
  OutboxQuery,
  StoreLimits,
  StoreRefusal,
} from "./store/store.ts";
