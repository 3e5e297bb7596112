ALTER TABLE "conversation_members" ADD COLUMN "joined_after_seq" bigint DEFAULT 0 NOT NULL;--> statement-breakpoint
ALTER TABLE "conversations" ADD COLUMN "members_version" bigint DEFAULT 0 NOT NULL;--> statement-breakpoint
-- Protocol 2 (docs/decisions/0009): messages are read from their conversation's log, so the message copies
-- in mailboxes and their pending relays are obsolete. Devices of protocol 1 are refused, and a cursor from
-- before this change meets the missing seqs as a cut (resync).
DELETE FROM "outbox" WHERE "event"->>'kind' = 'message';--> statement-breakpoint
DELETE FROM "mailbox_events" WHERE "event"->>'kind' = 'message';
