-- docs/decisions/0021: each mailbox is named by a random incarnation. gen_random_uuid() is volatile, so
-- Postgres computes it for each existing row: every mailbox gets its own.
ALTER TABLE "mailboxes" ADD COLUMN "incarnation" uuid DEFAULT gen_random_uuid() NOT NULL;