CREATE TABLE "mailbox_events" (
	"user_id" text NOT NULL,
	"seq" bigint NOT NULL,
	"event_id" text NOT NULL,
	"event" jsonb NOT NULL,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL,
	CONSTRAINT "mailbox_events_pk" PRIMARY KEY("user_id","seq"),
	CONSTRAINT "mailbox_events_event_unique" UNIQUE("user_id","event_id")
);
--> statement-breakpoint
CREATE TABLE "mailboxes" (
	"user_id" text PRIMARY KEY NOT NULL,
	"last_seq" bigint DEFAULT 0 NOT NULL,
	"floor_seq" bigint DEFAULT 0 NOT NULL
);
--> statement-breakpoint
CREATE TABLE "outbox" (
	"id" bigserial PRIMARY KEY NOT NULL,
	"conversation_id" text NOT NULL,
	"recipient_user_id" text NOT NULL,
	"event_id" text NOT NULL,
	"event" jsonb NOT NULL,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL,
	"attempts" integer DEFAULT 0 NOT NULL,
	CONSTRAINT "outbox_recipient_event_unique" UNIQUE("recipient_user_id","event_id")
);
--> statement-breakpoint
CREATE INDEX "outbox_conversation_id_index" ON "outbox" USING btree ("conversation_id","id");