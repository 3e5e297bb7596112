CREATE TABLE "dead_letters" (
	"id" bigint PRIMARY KEY NOT NULL,
	"conversation_id" text NOT NULL,
	"recipient_user_id" text NOT NULL,
	"event_id" text NOT NULL,
	"event" jsonb NOT NULL,
	"created_at" timestamp with time zone NOT NULL,
	"attempts" integer NOT NULL,
	"last_error" text NOT NULL,
	"dead_lettered_at" timestamp with time zone DEFAULT now() NOT NULL
);
--> statement-breakpoint
ALTER TABLE "outbox" ADD COLUMN "next_attempt_at" timestamp with time zone DEFAULT now() NOT NULL;--> statement-breakpoint
ALTER TABLE "outbox" ADD COLUMN "last_error" text;--> statement-breakpoint
CREATE INDEX "dead_letters_conversation_recipient_index" ON "dead_letters" USING btree ("conversation_id","recipient_user_id");