ALTER TABLE "conversations" ADD COLUMN "state" text DEFAULT 'active' NOT NULL;--> statement-breakpoint
ALTER TABLE "conversations" ADD COLUMN "moving_to_cell_id" text;--> statement-breakpoint
ALTER TABLE "conversations" ADD COLUMN "moved_epoch" bigint;--> statement-breakpoint
ALTER TABLE "mailboxes" ADD COLUMN "state" text DEFAULT 'active' NOT NULL;--> statement-breakpoint
ALTER TABLE "mailboxes" ADD COLUMN "moving_to_cell_id" text;--> statement-breakpoint
ALTER TABLE "mailboxes" ADD COLUMN "moved_epoch" bigint;--> statement-breakpoint
ALTER TABLE "conversations" ADD CONSTRAINT "conversations_state_check" CHECK ("conversations"."state" in ('active', 'frozen', 'importing', 'moved'));--> statement-breakpoint
ALTER TABLE "mailboxes" ADD CONSTRAINT "mailboxes_state_check" CHECK ("mailboxes"."state" in ('active', 'frozen', 'importing', 'moved'));