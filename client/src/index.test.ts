// Pins the public API: what callers (web page, CLI, load tests) import from @cellwire/client.
import { describe, expect, expectTypeOf, it } from "vitest";
import * as client from "./index.ts";
import type {
  Ack,
  CellwireClientError,
  CellwireClient,
  CellwireClientErrorCode,
  CellwireClientEvents,
  CellwireClientOptions,
  ConnectionStateName,
  ConversationSummary,
  HistoryPage,
  Joined,
  JoinedEvent,
  MailboxEvent,
  Message,
  Positions,
  PresenceState,
  PresenceStatus,
  ReceivedEvent,
  Receipt,
  ReceiptEvent,
  Resync,
  StateChange,
  Synced,
  TokenProvider,
  TypingIndicator,
  TypingStopped,
  UnknownMailboxEvent,
  Welcome,
} from "./index.ts";

describe("@cellwire/client public entry", () => {
  it("exports the client, its error class and the id checks", () => {
    expect(Object.keys(client).sort()).toEqual(
      [
        "CellwireClient",
        "CellwireClientError",
        "defaultBackoffOptions",
        "isConversationId",
        "isDeviceId",
        "isUserId",
        "messageBodyLengthMax",
      ].sort(),
    );
  });

  it("types each request by its reply", () => {
    expectTypeOf<CellwireClient["connect"]>().returns.resolves.toEqualTypeOf<Welcome>();
    expectTypeOf<CellwireClient["send"]>().returns.resolves.toEqualTypeOf<Ack>();
    expectTypeOf<CellwireClient["openDirect"]>().returns.resolves.toEqualTypeOf<ConversationSummary>();
    expectTypeOf<CellwireClient["history"]>().returns.resolves.toEqualTypeOf<HistoryPage>();
    expectTypeOf<HistoryPage["messages"]>().toEqualTypeOf<Message[]>();
    expectTypeOf<CellwireClient["state"]>().toEqualTypeOf<ConnectionStateName>();
    expectTypeOf<"timeout" | "closed" | "too_many_pending" | "not_a_member">().toExtend<CellwireClientErrorCode>();
    // A provider that ignores its argument fits, as the brief's `() => Promise<string>` does.
    expectTypeOf<() => Promise<string>>().toExtend<TokenProvider>();
  });

  it("types the edge URLs: one or several in the option, the current one as a getter and in state events", () => {
    expectTypeOf<CellwireClientOptions["url"]>().toEqualTypeOf<string | readonly string[]>();
    // A caller's mutable array fits too.
    expectTypeOf<string[]>().toExtend<CellwireClientOptions["url"]>();
    expectTypeOf<CellwireClient["url"]>().toEqualTypeOf<string>();
    expectTypeOf<StateChange["url"]>().toEqualTypeOf<string>();
    expectTypeOf<StateChange>().toHaveProperty("reconnectDelayMs").toEqualTypeOf<number | null>();
  });

  it("types the positions: the resume options, lastSeq, positions() and whenSynced", () => {
    expectTypeOf<CellwireClientOptions["resumeAfterSeq"]>().toEqualTypeOf<number | undefined>();
    expectTypeOf<CellwireClientOptions["resumeConversations"]>().toEqualTypeOf<Readonly<Record<string, number>> | undefined>();
    expectTypeOf<CellwireClient["lastSeq"]>().toEqualTypeOf<number | undefined>();
    expectTypeOf<CellwireClient["positions"]>().returns.toEqualTypeOf<Positions>();
    expectTypeOf<Positions>().toEqualTypeOf<{
      readonly mailboxSeq: number | undefined;
      readonly mailboxIncarnation: string | undefined;
      readonly conversations: Readonly<Record<string, number>>;
    }>();
    // What positions() gives back is what the options take.
    expectTypeOf<Positions["conversations"]>().toExtend<NonNullable<CellwireClientOptions["resumeConversations"]>>();
    expectTypeOf<CellwireClientOptions["resumeMailboxIncarnation"]>().toEqualTypeOf<string | undefined>();
    expectTypeOf<CellwireClient["whenSynced"]>().returns.resolves.toEqualTypeOf<number>();
  });

  it("types the mailbox events (joined, receipt, and kinds this SDK does not know) and the messages", () => {
    expectTypeOf<CellwireClientEvents["event"]>().toEqualTypeOf<ReceivedEvent>();
    expectTypeOf<ReceivedEvent>().toEqualTypeOf<{ seq: number; event: MailboxEvent | UnknownMailboxEvent }>();
    expectTypeOf<MailboxEvent>().toEqualTypeOf<JoinedEvent | ReceiptEvent>();
    expectTypeOf<UnknownMailboxEvent>().toEqualTypeOf<{ kind: "unknown"; unknownKind: string }>();
    expectTypeOf<CellwireClientEvents["joined"]>().toEqualTypeOf<Joined>();
    expectTypeOf<Joined>().toEqualTypeOf<Omit<JoinedEvent, "kind">>();
    expectTypeOf<Joined>().toHaveProperty("afterSeq").toEqualTypeOf<number>();
    expectTypeOf<CellwireClientEvents["receipt"]>().toEqualTypeOf<Receipt>();
    expectTypeOf<Receipt>().toEqualTypeOf<Omit<ReceiptEvent, "kind">>();
    expectTypeOf<CellwireClientEvents["message"]>().toEqualTypeOf<Message>();
    expectTypeOf<CellwireClientEvents["synced"]>().toEqualTypeOf<Synced>();
    expectTypeOf<Synced>().toEqualTypeOf<{ seq: number; mailboxIncarnation?: string }>();
    expectTypeOf<CellwireClientEvents["resync"]>().toEqualTypeOf<Resync>();
    expectTypeOf<Resync>().toEqualTypeOf<{ headSeq: number; mailboxIncarnation?: string }>();
    expectTypeOf<"mailbox_gap" | "conversation_gap" | "overloaded">().toExtend<CellwireClientErrorCode>();
    expectTypeOf<CellwireClientError["retryAfterMs"]>().toEqualTypeOf<number | undefined>();
    expectTypeOf<keyof CellwireClientEvents>().toEqualTypeOf<
      | "state"
      | "event"
      | "message"
      | "joined"
      | "synced"
      | "resync"
      | "welcome"
      | "error"
      | "typing"
      | "typingStopped"
      | "presence"
      | "receipt"
    >();
  });

  it("types typing and presence: the calls, the options and the events", () => {
    expectTypeOf<CellwireClient["typing"]>().parameters.toEqualTypeOf<[conversationId: string]>();
    expectTypeOf<CellwireClient["typing"]>().returns.resolves.toEqualTypeOf<void>();
    expectTypeOf<CellwireClient["watchPresence"]>().parameters.toEqualTypeOf<[userIds: readonly string[]]>();
    expectTypeOf<CellwireClient["watchPresence"]>().returns.resolves.toEqualTypeOf<PresenceState[]>();
    expectTypeOf<CellwireClientOptions["typingThrottleMs"]>().toEqualTypeOf<number | undefined>();
    expectTypeOf<CellwireClientEvents["typing"]>().toEqualTypeOf<TypingIndicator>();
    expectTypeOf<TypingIndicator>().toEqualTypeOf<{
      readonly conversationId: string;
      readonly userId: string;
      readonly deviceId: string;
      readonly expiresInMs: number;
      readonly expiresAtMs: number;
    }>();
    expectTypeOf<CellwireClientEvents["typingStopped"]>().toEqualTypeOf<TypingStopped>();
    expectTypeOf<TypingStopped>().toEqualTypeOf<{ readonly conversationId: string; readonly userId: string; readonly deviceId: string }>();
    expectTypeOf<CellwireClientEvents["presence"]>().toEqualTypeOf<PresenceState>();
    expectTypeOf<PresenceState>().toEqualTypeOf<{ userId: string; status: PresenceStatus; changedAtMs: number | null }>();
    expectTypeOf<PresenceStatus>().toEqualTypeOf<"online" | "offline">();
  });
});
