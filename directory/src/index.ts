// @cellwire/directory: the Discovery Service (user and conversation -> home cell, the cell registry),
// startable in-process from a typed config.
export { loadDirectoryConfig, directoryConfigDefaults, type DirectoryConfig, type LoadedDirectoryConfig } from "./config.ts";
export { startDirectory, directoryQueueGroup, directoryProcessName, type RunningDirectory } from "./directory-service.ts";
export { answerDirectoryRequest, errorReply } from "./directory-answers.ts";
export {
  RedisDirectory,
  cellsMax,
  cellEntriesReplyIdsMax,
  type PlacedEntry,
  type DirectoryRefusal,
  type PlacementResult,
  type AssignmentResult,
  type RegistrationResult,
  type CellStateResult,
  type MoveResult,
  type MoveEntryInput,
  type RedisDirectoryOptions,
  type CellEntriesPage,
} from "./redis-directory.ts";
export { RedisUnavailableError, DirectoryStoreError } from "./errors.ts";
// The directory's metrics, for a check of what a deployment's dashboards and alerts name (cli/test/deployment-map.ts).
export { createDirectoryMetrics } from "./directory-metrics.ts";
