ALTER TABLE "conversations" ADD COLUMN "owner_epoch" bigint DEFAULT 0 NOT NULL;--> statement-breakpoint
ALTER TABLE "mailboxes" ADD COLUMN "owner_epoch" bigint DEFAULT 0 NOT NULL;