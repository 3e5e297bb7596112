ALTER TABLE "conversation_members" ADD COLUMN "joined_after_seq" bigint DEFAULT 0 NOT NULL;--> statement-breakpoint
ALTER TABLE "conversations" ADD COLUMN "members_version" bigint DEFAULT 0 NOT NULL;--> statement-breakpoint
-- Protocol 2 (docs/decisions/0009): messages are read from their conversation's log, so the message copies
-- in mailboxes and their pending relays are obsolete. A mailbox of protocol 1 is cut whole (its floor
-- raised to its head): deleting only its message events would leave holes between its receipts, which no
-- device could read past. Devices of protocol 1 are refused, and a cursor from before this change gets
-- `resync`. Protocol 1 mailboxes hold no joined events: conversations joined before the upgrade reach a
-- device through its hello's cursors, a live message, or `history`, not through the mailbox.
DELETE FROM "outbox" WHERE "event"->>'kind' = 'message';--> statement-breakpoint
DELETE FROM "mailbox_events" WHERE "event"->>'kind' IN ('message', 'receipt');--> statement-breakpoint
UPDATE "mailboxes" SET "floor_seq" = "last_seq" WHERE "floor_seq" < "last_seq";
