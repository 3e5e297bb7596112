// The tables of one cell's database. drizzle-kit generates the migrations in cells/drizzle/ from this file
// (`npm run db:generate -w @cellwire/cells`); workers apply them at start.
//
// Room for later work, deliberately not built yet: per-user mailboxes (mailboxes + mailbox_events keyed
// by (user_id, seq)), a transactional outbox for fan-out written in the same transaction as the message,
// and an ownership epoch on conversations so that a worker whose lease lapsed is fenced by the database
// (`UPDATE ... WHERE owner_epoch = $epoch`). Each is a new table or column; nothing here needs reshaping.
import { sql } from "drizzle-orm";
import { bigint, check, index, pgTable, primaryKey, text, timestamp, unique } from "drizzle-orm/pg-core";

export const conversations = pgTable(
  "conversations",
  {
    id: text("id").primaryKey(),
    kind: text("kind", { enum: ["direct", "group"] }).notNull(),
    title: text("title"),
    createdByUserId: text("created_by_user_id").notNull(),
    createdAt: timestamp("created_at", { withTimezone: true }).notNull().defaultNow(),
    /** The seq of the newest message; the append statement increments it under the row lock, so seqs are gapless. */
    lastSeq: bigint("last_seq", { mode: "number" }).notNull().default(0),
  },
  (table) => [check("conversations_kind_check", sql`${table.kind} in ('direct', 'group')`)],
);

export const conversationMembers = pgTable(
  "conversation_members",
  {
    conversationId: text("conversation_id")
      .notNull()
      .references(() => conversations.id),
    userId: text("user_id").notNull(),
    joinedAt: timestamp("joined_at", { withTimezone: true }).notNull().defaultNow(),
  },
  (table) => [
    primaryKey({ name: "conversation_members_pk", columns: [table.conversationId, table.userId] }),
    // A user's conversations (a future conversation list and mailbox rebuilds) are looked up by user.
    index("conversation_members_user_id_index").on(table.userId),
  ],
);

export const messages = pgTable(
  "messages",
  {
    conversationId: text("conversation_id")
      .notNull()
      .references(() => conversations.id),
    seq: bigint("seq", { mode: "number" }).notNull(),
    messageId: text("message_id").notNull().unique("messages_message_id_unique"),
    senderUserId: text("sender_user_id").notNull(),
    senderDeviceId: text("sender_device_id").notNull(),
    clientMessageId: text("client_message_id").notNull(),
    body: text("body").notNull(),
    sentAt: timestamp("sent_at", { withTimezone: true }).notNull().defaultNow(),
  },
  (table) => [
    primaryKey({ name: "messages_pk", columns: [table.conversationId, table.seq] }),
    // Dedupe of retried sends: one message per (conversation, sender, clientMessageId).
    unique("messages_client_message_unique").on(table.conversationId, table.senderUserId, table.clientMessageId),
  ],
);
