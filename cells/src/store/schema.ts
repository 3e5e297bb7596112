// The tables of one cell's database. drizzle-kit generates the migrations in cells/drizzle/ from this file
// (`npm run db:generate -w @cellwire/cells`); workers apply them at start.
//
// Migrations move a database created by an earlier version forward in place. They add, except where the
// data model changed: 0006 dropped the protocol 1 message copies from mailboxes and the outbox, and 0007
// the foreign key of messages (see each file).
//
// Live migration (docs/decisions/0008-live-migration.md): a conversation and a mailbox row each carry the
// key's migration state. `active` is the normal state; `frozen` while the key is copied out of this cell
// (writes answer `moving`, reads are served); `importing` while a copy comes in (everything answers
// `moving`); `moved` once the key lives elsewhere: the row stays as a tombstone naming the new home
// (`moving_to_cell_id`, and `moved_epoch`, the directory epoch of the move) while its other rows are gone.
import { sql } from "drizzle-orm";
import { bigint, bigserial, check, index, integer, jsonb, pgTable, primaryKey, text, timestamp, unique, uuid } from "drizzle-orm/pg-core";

export const keyStates = ["active", "frozen", "importing", "moved"] as const;
export type KeyState = (typeof keyStates)[number];

/** The migration columns, the same on conversations and mailboxes. */
function migrationColumns() {
  return {
    state: text("state", { enum: keyStates }).notNull().default("active"),
    /** The target cell while frozen, the new home once moved; null otherwise. */
    movingToCellId: text("moving_to_cell_id"),
    /** The directory epoch of the key in its new home, once moved (the cell.moved reply carries it). */
    movedEpoch: bigint("moved_epoch", { mode: "number" }),
  };
}

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
    /**
     * The highest ring epoch (membership bucket revision) the conversation was written under. A write
     * checks `owner_epoch <= epoch` and sets it under the row lock, so a stale owner cannot commit after
     * a newer one did. 0 for rows of databases older than the epochs.
     */
    ownerEpoch: bigint("owner_epoch", { mode: "number" }).notNull().default(0),
    /**
     * Grows with every change of the members. The send statement returns it with the seqs it assigns,
     * under the row lock, so the worker publishing a message knows whether its cached member list is the
     * one the message was stored with (docs/decisions/0009).
     */
    membersVersion: bigint("members_version", { mode: "number" }).notNull().default(0),
    ...migrationColumns(),
  },
  (table) => [
    check("conversations_kind_check", sql`${table.kind} in ('direct', 'group')`),
    check("conversations_state_check", sql`${table.state} in ('active', 'frozen', 'importing', 'moved')`),
    // The frozen-key sweeper polls frozen rows: a partial index holds only those, a handful at a time.
    index("conversations_frozen_index")
      .on(table.id)
      .where(sql`${table.state} = 'frozen'`),
  ],
);

export const conversationMembers = pgTable(
  "conversation_members",
  {
    conversationId: text("conversation_id")
      .notNull()
      .references(() => conversations.id),
    userId: text("user_id").notNull(),
    joinedAt: timestamp("joined_at", { withTimezone: true }).notNull().defaultNow(),
    /**
     * The member's join point: the conversation's last seq when they joined (0 for the members a
     * conversation was created with). Their devices follow the log after it (docs/decisions/0009).
     */
    joinedAfterSeq: bigint("joined_after_seq", { mode: "number" }).notNull().default(0),
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
    // No foreign key to conversations: its check cost a key-share lock and ~15 µs per stored message, and
    // the one statement that inserts messages (postgres-sends.ts) takes the conversation's row lock to
    // number them, so a message never exists without its conversation (tombstones keep the row).
    conversationId: text("conversation_id").notNull(),
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

/**
 * One row per user whose mailbox lives in this cell. `last_seq` is the seq of the newest event (the append
 * statement increments it under the row lock, so the per-user sequence is gapless); every event up to
 * `floor_seq` was cut by retention. `incarnation` names this mailbox among every mailbox that ever had
 * the user's id (docs/decisions/0021): random when the row is created, copied by a live migration, so a
 * device's cursor from a restored database, a re-created mailbox or another account is recognised.
 */
export const mailboxes = pgTable(
  "mailboxes",
  {
    userId: text("user_id").primaryKey(),
    lastSeq: bigint("last_seq", { mode: "number" }).notNull().default(0),
    floorSeq: bigint("floor_seq", { mode: "number" }).notNull().default(0),
    /** The highest ring epoch an append was made under; fences stale mailbox owners as on conversations. */
    ownerEpoch: bigint("owner_epoch", { mode: "number" }).notNull().default(0),
    // gen_random_uuid() is volatile, so adding the column gives each existing row its own value.
    incarnation: uuid("incarnation").notNull().defaultRandom(),
    ...migrationColumns(),
  },
  (table) => [
    check("mailboxes_state_check", sql`${table.state} in ('active', 'frozen', 'importing', 'moved')`),
    index("mailboxes_frozen_index")
      .on(table.userId)
      .where(sql`${table.state} = 'frozen'`),
  ],
);

/** A user's ordered event log. `event_id` makes appends idempotent: one entry per (user, event). */
export const mailboxEvents = pgTable(
  "mailbox_events",
  {
    userId: text("user_id").notNull(),
    seq: bigint("seq", { mode: "number" }).notNull(),
    eventId: text("event_id").notNull(),
    event: jsonb("event").notNull(),
    createdAt: timestamp("created_at", { withTimezone: true }).notNull().defaultNow(),
  },
  (table) => [
    primaryKey({ name: "mailbox_events_pk", columns: [table.userId, table.seq] }),
    unique("mailbox_events_event_unique").on(table.userId, table.eventId),
  ],
);

/**
 * Mailbox events (joined, receipt) still to be applied at their recipient's mailbox owner (in any cell).
 * Written in the transaction of the change they announce, deleted once the owner answered cell.appended.
 * Messages have no rows here: they are read from their conversation's log (docs/decisions/0009).
 */
export const outbox = pgTable(
  "outbox",
  {
    id: bigserial("id", { mode: "number" }).primaryKey(),
    conversationId: text("conversation_id").notNull(),
    recipientUserId: text("recipient_user_id").notNull(),
    eventId: text("event_id").notNull(),
    event: jsonb("event").notNull(),
    createdAt: timestamp("created_at", { withTimezone: true }).notNull().defaultNow(),
    /** Failed relays so far; at WORKER_RELAY_FAILURES_MAX the recipient's rows go to dead_letters. */
    attempts: integer("attempts").notNull().default(0),
    /**
     * After a failed relay, no attempt before this (backoff with jitter, docs/decisions/0022): the
     * recipient's rows of the conversation wait while the other recipients' rows flow.
     */
    nextAttemptAt: timestamp("next_attempt_at", { withTimezone: true }).notNull().defaultNow(),
    /** Why the last relay failed, for operators (and the dead letter it may become). */
    lastError: text("last_error"),
  },
  (table) => [
    unique("outbox_recipient_event_unique").on(table.recipientUserId, table.eventId),
    // A conversation's pending rows, in id order, are what its owner drains.
    index("outbox_conversation_id_index").on(table.conversationId, table.id),
  ],
);

/**
 * A member's positions in a conversation (conversation seqs, 0 for none): `read_seq` as the user marked
 * it read, `delivered_seq` as the highest a device of theirs reported holding. Both only grow; they are
 * written under the conversation row's lock, so concurrent receipts of one conversation are ordered.
 */
export const readPositions = pgTable(
  "read_positions",
  {
    conversationId: text("conversation_id")
      .notNull()
      .references(() => conversations.id),
    userId: text("user_id").notNull(),
    readSeq: bigint("read_seq", { mode: "number" }).notNull().default(0),
    deliveredSeq: bigint("delivered_seq", { mode: "number" }).notNull().default(0),
    updatedAt: timestamp("updated_at", { withTimezone: true }).notNull().defaultNow(),
  },
  (table) => [primaryKey({ name: "read_positions_pk", columns: [table.conversationId, table.userId] })],
);

/**
 * Outbox rows whose recipient could not be reached WORKER_RELAY_FAILURES_MAX times (docs/decisions/0022):
 * the (conversation, recipient) rows move here together, keeping their outbox ids, so the relay stops
 * retrying them while the others flow. While a (conversation, recipient) has dead letters its newer rows
 * follow them here (order per recipient holds). `cellwire dead-letters redrive` moves them back.
 */
export const deadLetters = pgTable(
  "dead_letters",
  {
    /** The outbox id, kept: a redriven row goes back with it and keeps its place in the order. */
    id: bigint("id", { mode: "number" }).primaryKey(),
    conversationId: text("conversation_id").notNull(),
    recipientUserId: text("recipient_user_id").notNull(),
    eventId: text("event_id").notNull(),
    event: jsonb("event").notNull(),
    /** When the outbox row was written. */
    createdAt: timestamp("created_at", { withTimezone: true }).notNull(),
    attempts: integer("attempts").notNull(),
    lastError: text("last_error").notNull(),
    deadLetteredAt: timestamp("dead_lettered_at", { withTimezone: true }).notNull().defaultNow(),
  },
  // A drain asks which recipients of its conversation have dead letters.
  (table) => [index("dead_letters_conversation_recipient_index").on(table.conversationId, table.recipientUserId)],
);
