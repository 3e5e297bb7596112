// The ConversationStore on a cell's Postgres database (drizzle-orm over a pg Pool).
//
// Ordering does not trust leases: a message's seq comes from `UPDATE conversations SET last_seq =
// last_seq + n` in the same statement that inserts the messages (postgres-sends.ts: many sends at once),
// so the conversation row's lock orders concurrent writers, even two workers that both believe they own
// the conversation. A statement that fails (a concurrent duplicate retry) rolls its increment back with
// it: no gap, no repeated seq. The mailbox seq works the same way on the `mailboxes` row. Messages have no
// outbox rows (docs/decisions/0009): the outbox carries the joined and receipt events written with the
// change they announce.
//
// Fencing does not trust leases either: every write that orders or changes a conversation or a mailbox
// carries the writer's ring epoch and, in the statement that takes the row lock, requires
// `owner_epoch <= epoch` and sets `owner_epoch = epoch`. A worker that lost the key (paused past its
// lease, or behind on the membership watch) therefore cannot commit once the new owner has written.
//
// Migration states (key-state.ts) are checked the same way: the statement that takes the row lock also
// requires `state = 'active'`, so a freeze (which takes the same lock) orders with sends and appends, and//
// The operations live in one module per part of the store (postgres-messages.ts, postgres-conversations.ts,
// postgres-mailboxes.ts, postgres-outbox.ts, postgres-migration.ts, sharing postgres-rows.ts); this class
// composes them into the one ConversationStore a worker holds, so every part runs on the same pools.
import { drizzle } from "drizzle-orm/node-postgres";
import type { Pool } from "pg";
import { groupMembersMax, type DirectoryEntryKind, type ImportedMailboxEvent, type InventoryKey, type Message } from "@cellwire/protocol";
import { StoreRowError } from "./errors.ts";
import { PostgresConversations } from "./postgres-conversations.ts";
import { PostgresMailboxes } from "./postgres-mailboxes.ts";
import { PostgresMessages } from "./postgres-messages.ts";
import { PostgresMigration } from "./postgres-migration.ts";
import { PostgresOutbox } from "./postgres-outbox.ts";
import { tombstoneBatchRowsDefault } from "./store.ts";
import type {
  AddMembersInput,
  AppendMailboxInput,
  AppendMailboxResult,
  AppendMessageInput,
  AppendMessageResult,
  CellStoreStats,
  ConversationExport,
  ConversationResult,
  ConversationStore,
  CreateGroupInput,
  DeadLetter,
  DeadLetterInput,
  EpochFenced,
  ExportMailboxInput,
  ExportMessagesInput,
  FreezeInput,
  FreezeResult,
  FrozenKey,
  HistoryInput,
  HistoryResult,
  ImportPageInput,
  ImportPageResult,
  KeyMigrationState,
  MailboxPageInput,
  MailboxPageResult,
  MarkReceiptInput,
  MarkReceiptResult,
  MembersResult,
  MessagesAfterInput,
  MessagesAfterResult,
  MigrationKey,
  OpenDirectInput,
  OutboxAttempts,
  OutboxFailure,
  OutboxPage,
  OutboxQuery,
  RedriveSelection,
  SendKey,
  StoreLimits,
  TombstoneInput,
  TombstoneResult,
  UnfreezeResult,
} from "./store.ts";

export class PostgresConversationStore implements ConversationStore {
  private readonly messages: PostgresMessages;
  private readonly conversations: PostgresConversations;
  private readonly mailboxes: PostgresMailboxes;
  private readonly outbox: PostgresOutbox;
  private readonly migration: PostgresMigration;

  /**
   * `sendPool`: the connections the group commit's statement runs on (the worker gives it its own, set up
   * by sendSessionOptions); the main pool when absent.
   */
  constructor(pool: Pool, limits: Partial<StoreLimits> = {}, sendPool: Pool = pool) {
    const database = drizzle({ client: pool });
    const storeLimits: StoreLimits = {
      groupMembersMax: Math.min(limits.groupMembersMax ?? groupMembersMax, groupMembersMax),
      tombstoneBatchRowsMax: limits.tombstoneBatchRowsMax ?? tombstoneBatchRowsDefault,
    };
    this.messages = new PostgresMessages(database, sendPool);
    this.conversations = new PostgresConversations(database, storeLimits);
    this.mailboxes = new PostgresMailboxes(database, pool);
    this.outbox = new PostgresOutbox(database);
    this.migration = new PostgresMigration(database, storeLimits);
  }

  // Through appendMessages (not this.messages), so a subclass that wraps appendMessages wraps both.
  async appendMessage(input: AppendMessageInput): Promise<AppendMessageResult> {
    const [result] = await this.appendMessages([input]);
    if (result === undefined) throw new StoreRowError("a batch of one send returned no result");
    return result;
  }

  appendMessages(inputs: readonly AppendMessageInput[]): Promise<AppendMessageResult[]> {
    return this.messages.appendMessages(inputs);
  }

  settledSends(keys: readonly SendKey[]): Promise<ReadonlySet<string>> {
    return this.messages.settledSends(keys);
  }

  messagesAfter(input: MessagesAfterInput): Promise<MessagesAfterResult> {
    return this.messages.messagesAfter(input);
  }

  openDirect(input: OpenDirectInput): Promise<ConversationResult<"not_a_member" | "invalid_peer">> {
    return this.conversations.openDirect(input);
  }

  createGroup(input: CreateGroupInput): Promise<ConversationResult<"not_a_member" | "too_many_members">> {
    return this.conversations.createGroup(input);
  }

  addMembers(input: AddMembersInput): Promise<ConversationResult<"not_a_member" | "not_a_group" | "too_many_members">> {
    return this.conversations.addMembers(input);
  }

  history(input: HistoryInput): Promise<HistoryResult> {
    return this.messages.history(input);
  }

  markReceipt(input: MarkReceiptInput): Promise<MarkReceiptResult> {
    return this.conversations.markReceipt(input);
  }

  members(conversationId: string): Promise<MembersResult> {
    return this.conversations.members(conversationId);
  }

  sharedPeers(userId: string, peerUserIds: readonly string[]): Promise<string[]> {
    return this.conversations.sharedPeers(userId, peerUserIds);
  }

  appendMailbox(input: AppendMailboxInput): Promise<AppendMailboxResult> {
    return this.mailboxes.appendMailbox(input);
  }

  mailboxPage(input: MailboxPageInput): Promise<MailboxPageResult> {
    return this.mailboxes.mailboxPage(input);
  }

  trimMailbox(userId: string, throughSeq: number): Promise<number> {
    return this.mailboxes.trimMailbox(userId, throughSeq);
  }

  pendingOutbox(query: OutboxQuery): Promise<OutboxPage> {
    return this.outbox.pendingOutbox(query);
  }

  migrationState(key: MigrationKey): Promise<KeyMigrationState | undefined> {
    return this.migration.migrationState(key);
  }

  freeze(input: FreezeInput): Promise<FreezeResult> {
    return this.migration.freeze(input);
  }

  unfreeze(input: EpochFenced & MigrationKey): Promise<UnfreezeResult> {
    return this.migration.unfreeze(input);
  }

  frozenKeys(limit: number, after?: MigrationKey): Promise<FrozenKey[]> {
    return this.migration.frozenKeys(limit, after);
  }

  inventory(kind: DirectoryEntryKind, afterId: string, limit: number): Promise<InventoryKey[]> {
    return this.migration.inventory(kind, afterId, limit);
  }

  exportMailbox(input: ExportMailboxInput): Promise<ImportedMailboxEvent[]> {
    return this.migration.exportMailbox(input);
  }

  exportConversation(conversationId: string): Promise<ConversationExport | undefined> {
    return this.migration.exportConversation(conversationId);
  }

  exportMessages(input: ExportMessagesInput): Promise<Message[]> {
    return this.migration.exportMessages(input);
  }

  importPage(input: ImportPageInput): Promise<ImportPageResult> {
    return this.migration.importPage(input);
  }

  tombstone(input: TombstoneInput): Promise<TombstoneResult> {
    return this.migration.tombstone(input);
  }

  stats(): Promise<CellStoreStats> {
    return this.migration.stats();
  }

  deleteOutbox(ids: readonly number[]): Promise<void> {
    return this.outbox.deleteOutbox(ids);
  }

  markOutboxAttempt(failures: readonly OutboxFailure[]): Promise<OutboxAttempts[]> {
    return this.outbox.markOutboxAttempt(failures);
  }

  deadLetterOutbox(input: DeadLetterInput): Promise<number> {
    return this.outbox.deadLetterOutbox(input);
  }

  deadLetteredRecipients(conversationId: string): Promise<string[]> {
    return this.outbox.deadLetteredRecipients(conversationId);
  }

  deadLetters(query: { readonly afterId: number; readonly limit: number }): Promise<DeadLetter[]> {
    return this.outbox.deadLetters(query);
  }

  redriveDeadLetters(selection: RedriveSelection): Promise<number[]> {
    return this.outbox.redriveDeadLetters(selection);
  }
}
