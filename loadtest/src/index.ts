// @cellwire/loadtest: correctness tooling for runs against Cellwire. Today the history checker and the
// dump of the cell databases it reads; the load scripts are still to come (see README.md).
export {
  checkHistory,
  findingKinds,
  findingsListedMax,
  idsListedMax,
  type AckRecord,
  type CheckReport,
  type ConversationMember,
  type ConversationMembers,
  type DatabaseSnapshot,
  type DeliveredEvent,
  type DeliveredMessage,
  type DeviceDeliveries,
  type Finding,
  type FindingKind,
  type HistoryRecord,
  type MailboxEntry,
  type SendRecord,
  type StoredMailbox,
} from "./history-checker.ts";
export {
  DatabaseDumpError,
  dumpCellDatabases,
  dumpPageRowsDefault,
  dumpRowsPerTableMax,
  type DatabaseDumpErrorCode,
  type DumpCellDatabasesOptions,
} from "./database-dump.ts";
