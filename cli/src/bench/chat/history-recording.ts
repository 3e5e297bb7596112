// Everything the chat benchmark knows about the history checker (loadtest/src/history-checker.ts) lives
// here, so that a change of the checker's record changes this module alone. The checker wants, per
// device, the messages it received (conversation, seq, messageId: it compares copies by messageId) and the
// mailbox events it received (joined, receipt: whole), plus every send and ack.
//
// Load processes record cheaply: one tab-separated line per send, ack and mailbox event, appended to a
// file of their own in chunks (nothing kept in memory but the chunk being filled). The coordinator reads
// the files at the end and toHistoryRecord turns them, with the databases' dump, into the checker's input.
//
// Lines (fields separated by tabs; a conversation is `#<index>` when the workload knows it, else its id):
//   s <userIndex> <clientMessageId> <conversation> <body>        a send; body is `<key>:<intendedUs>` when
//                                                                made by messageBody, else `=` + JSON
//   a <userIndex> <clientMessageId> <conversation> <messageId> <seq>
//   m <userIndex> <conversation> <seq> <messageId>               a message frame
//   v <userIndex> <mailboxSeq> <event as JSON>                   a mailbox event (joined, receipt)
import { createReadStream, createWriteStream, type WriteStream } from "node:fs";
import { createInterface } from "node:readline";
import type { DatabaseSnapshot, DeliveredEvent, DeviceDeliveries, HistoryRecord } from "@cellwire/loadtest";
import { decode, mailboxEvent, type Message } from "@cellwire/protocol";
import type { ReceivedEvent } from "@cellwire/client";
import type { CellwireObserver } from "./cellwire-connection.ts";
import { messageBody, parseMessageBody } from "./workload.ts";

/** A chunk of lines is written once it reaches this many characters. */
const chunkLengthMax = 64 * 1024;
/** A line longer than this is no line of ours: reading stops there rather than hold it. */
const lineLengthMax = 256 * 1024;

// ---------------------------------------------------------------------------------------------------
// Recording, in a load process

export class HistoryRecorder {
  private readonly stream: WriteStream;
  private chunk = "";
  private readonly positions = new Map<number, number>();
  private conversationIndexes = new Map<string, number>();
  private streamError: Error | undefined;

  constructor(
    path: string,
    private readonly bodyBytes: number,
  ) {
    this.stream = createWriteStream(path, { flags: "wx" });
    // Reported at close(): a recording that could not be written fails the history check, not the load.
    this.stream.on("error", (error) => {
      this.streamError ??= error;
    });
  }

  /** Conversations known by their index are written as `#<index>`: shorter, and checked against the plan. */
  setConversations(indexById: ReadonlyMap<string, number>): void {
    this.conversationIndexes = new Map(indexById);
  }

  observerOf(userIndex: number): CellwireObserver {
    return {
      sending: (clientMessageId, conversationId, body) => {
        this.append(`s\t${userIndex}\t${clientMessageId}\t${this.conversationRef(conversationId)}\t${this.bodyRef(body)}\n`);
      },
      acknowledged: (ack) => {
        this.append(`a\t${userIndex}\t${ack.clientMessageId}\t${this.conversationRef(ack.conversationId)}\t${ack.messageId}\t${ack.seq}\n`);
      },
      received: (message) => this.received(userIndex, message),
      receivedEvent: (event) => this.receivedEvent(userIndex, event),
    };
  }

  /**
   * How far the user's connection has read: its last mailbox seq plus, per conversation, the seq of the
   * last message it received (see positionsToReach).
   */
  position(userIndex: number): number {
    return this.positions.get(userIndex) ?? 0;
  }

  /** Writes what is left and closes the file; rejects if any write failed. */
  async close(): Promise<void> {
    this.flush();
    await new Promise<void>((resolve) => this.stream.end(resolve));
    if (this.streamError !== undefined) throw this.streamError;
  }

  // The SDK emits each message and each mailbox event once and in order, so each one moves the position by one.
  private received(userIndex: number, message: Message): void {
    this.positions.set(userIndex, (this.positions.get(userIndex) ?? 0) + 1);
    this.append(`m\t${userIndex}\t${this.conversationRef(message.conversationId)}\t${message.seq}\t${message.messageId}\n`);
  }

  private receivedEvent(userIndex: number, { seq, event }: ReceivedEvent): void {
    this.positions.set(userIndex, (this.positions.get(userIndex) ?? 0) + 1);
    this.append(`v\t${userIndex}\t${seq}\t${JSON.stringify(event)}\n`);
  }

  private conversationRef(conversationId: string): string {
    const index = this.conversationIndexes.get(conversationId);
    return index === undefined ? conversationId : `#${index}`;
  }

  private bodyRef(body: string): string {
    const header = parseMessageBody(body);
    // Only a body messageBody would make again from its header is shortened; anything else is kept whole.
    if (header !== undefined && body === messageBody(header.key, header.intendedUs, this.bodyBytes))
      return `${header.key}:${header.intendedUs}`;
    return `=${JSON.stringify(body)}`;
  }

  private append(line: string): void {
    this.chunk += line;
    if (this.chunk.length >= chunkLengthMax) this.flush();
  }

  private flush(): void {
    if (this.chunk.length === 0) return;
    this.stream.write(this.chunk);
    this.chunk = "";
  }
}

// ---------------------------------------------------------------------------------------------------
// Reading, in the coordinator

type ConversationRef = { readonly index: number } | { readonly conversationId: string };
type BodyRef = { readonly key: number; readonly intendedUs: number } | { readonly text: string };

export type RecordedSend = {
  readonly userIndex: number;
  readonly clientMessageId: string;
  readonly conversation: ConversationRef;
  readonly body: BodyRef;
};
export type RecordedAck = {
  readonly userIndex: number;
  readonly clientMessageId: string;
  readonly conversation: ConversationRef;
  readonly messageId: string;
  readonly seq: number;
};
export type RecordedMessage = { readonly conversation: ConversationRef; readonly seq: number; readonly messageId: string };

export type Recording = {
  readonly sends: RecordedSend[];
  readonly acks: RecordedAck[];
  /** Messages per user index, in arrival order. */
  readonly messages: Map<number, RecordedMessage[]>;
  /** Mailbox events per user index, in arrival order. */
  readonly events: Map<number, DeliveredEvent[]>;
};

export class RecordingFormatError extends Error {
  override readonly name = "RecordingFormatError";
}

const wholeNumber = /^(0|[1-9][0-9]{0,15})$/;
/** Ids of the protocol (client message, message and conversation ids) all match this. */
const token = /^[A-Za-z0-9_-]{1,64}$/;

function numberField(fields: readonly string[], position: number, where: string): number {
  const text = fields[position] ?? "";
  const value = Number(text);
  if (!wholeNumber.test(text) || !Number.isSafeInteger(value))
    throw new RecordingFormatError(`${where}: field ${position} is not a whole number: ${JSON.stringify(text.slice(0, 40))}`);
  return value;
}

function tokenField(fields: readonly string[], position: number, where: string): string {
  const text = fields[position] ?? "";
  if (!token.test(text)) throw new RecordingFormatError(`${where}: field ${position} is not an id: ${JSON.stringify(text.slice(0, 40))}`);
  return text;
}

function conversationField(fields: readonly string[], position: number, where: string): ConversationRef {
  const text = fields[position] ?? "";
  if (text.startsWith("#")) return { index: numberField([text.slice(1)], 0, where) };
  return { conversationId: tokenField(fields, position, where) };
}

function bodyField(fields: readonly string[], position: number, where: string): BodyRef {
  const text = fields[position] ?? "";
  if (text.startsWith("=")) {
    const parsed: unknown = JSON.parse(text.slice(1));
    if (typeof parsed !== "string") throw new RecordingFormatError(`${where}: the body is not a JSON string`);
    return { text: parsed };
  }
  const [key, intended, ...rest] = text.split(":");
  if (rest.length > 0) throw new RecordingFormatError(`${where}: the body reference has too many parts`);
  return { key: numberField([key ?? ""], 0, where), intendedUs: numberField([intended ?? ""], 0, where) };
}

/** Parses one line into `recording`; throws RecordingFormatError naming the line for anything malformed. */
export function parseRecordingLine(line: string, recording: Recording, where: string): void {
  const fields = line.split("\t");
  const expectFields = (count: number): void => {
    if (fields.length !== count) throw new RecordingFormatError(`${where}: ${fields.length} fields, not ${count}`);
  };
  switch (fields[0]) {
    case "s":
      expectFields(5);
      recording.sends.push({
        userIndex: numberField(fields, 1, where),
        clientMessageId: tokenField(fields, 2, where),
        conversation: conversationField(fields, 3, where),
        body: bodyField(fields, 4, where),
      });
      return;
    case "a":
      expectFields(6);
      recording.acks.push({
        userIndex: numberField(fields, 1, where),
        clientMessageId: tokenField(fields, 2, where),
        conversation: conversationField(fields, 3, where),
        messageId: tokenField(fields, 4, where),
        seq: numberField(fields, 5, where),
      });
      return;
    case "m": {
      expectFields(5);
      const userIndex = numberField(fields, 1, where);
      const message = {
        conversation: conversationField(fields, 2, where),
        seq: numberField(fields, 3, where),
        messageId: tokenField(fields, 4, where),
      };
      const messages = recording.messages.get(userIndex);
      if (messages === undefined) recording.messages.set(userIndex, [message]);
      else messages.push(message);
      return;
    }
    case "v": {
      expectFields(4);
      const userIndex = numberField(fields, 1, where);
      const seq = numberField(fields, 2, where);
      const parsed: unknown = JSON.parse(fields[3] ?? "");
      // A kind the protocol does not know was recorded as the SDK's unknown event: kept as such.
      const known = decode(mailboxEvent, parsed);
      const event: DeliveredEvent["event"] = known.ok ? known.value : unknownEventOf(parsed, where);
      const events = recording.events.get(userIndex);
      if (events === undefined) recording.events.set(userIndex, [{ seq, event }]);
      else events.push({ seq, event });
      return;
    }
    default:
      throw new RecordingFormatError(`${where}: unknown line kind ${JSON.stringify((fields[0] ?? "").slice(0, 10))}`);
  }
}

function unknownEventOf(parsed: unknown, where: string): DeliveredEvent["event"] {
  if (typeof parsed === "object" && parsed !== null) {
    const { kind, unknownKind } = parsed as { kind?: unknown; unknownKind?: unknown };
    if (kind === "unknown" && typeof unknownKind === "string") return { kind: "unknown", unknownKind };
  }
  throw new RecordingFormatError(`${where}: the mailbox event is neither a known kind nor an unknown one`);
}

/** Reads the files of every load process (each in its own order; processes hold disjoint users). */
export async function readRecordings(paths: readonly string[]): Promise<Recording> {
  const recording: Recording = { sends: [], acks: [], messages: new Map(), events: new Map() };
  for (const path of paths) {
    const lines = createInterface({ input: createReadStream(path, { encoding: "utf8" }), crlfDelay: Number.POSITIVE_INFINITY });
    let number = 0;
    for await (const line of lines) {
      number++;
      if (line.length > lineLengthMax) throw new RecordingFormatError(`${path}:${number}: a line of ${line.length} characters`);
      if (line.length > 0) parseRecordingLine(line, recording, `${path}:${number}`);
    }
  }
  return recording;
}

export type RecordingContext = {
  /** Every user that had a connection, by index. */
  readonly userIds: ReadonlyMap<number, string>;
  readonly deviceId: string;
  /** Conversation ids by the workload's index. */
  readonly conversationIds: readonly string[];
  readonly bodyBytes: number;
};

/**
 * The checker's input from the recording and the databases' dump. A recorded message names its
 * conversation, seq and messageId, which is how the checker compares copies (by messageId).
 */
export function toHistoryRecord(
  recording: Recording,
  context: RecordingContext,
  database: DatabaseSnapshot,
  expectComplete: boolean,
): HistoryRecord {
  const userIdOf = (userIndex: number): string => {
    const userId = context.userIds.get(userIndex);
    if (userId === undefined) throw new RecordingFormatError(`the recording names user index ${userIndex}, which had no connection`);
    return userId;
  };
  const conversationIdOf = (reference: ConversationRef): string => {
    if ("conversationId" in reference) return reference.conversationId;
    const conversationId = context.conversationIds[reference.index];
    if (conversationId === undefined)
      throw new RecordingFormatError(`the recording names conversation #${reference.index}, which the run did not make`);
    return conversationId;
  };
  const sends = recording.sends.map((send) => ({
    senderUserId: userIdOf(send.userIndex),
    senderDeviceId: context.deviceId,
    conversationId: conversationIdOf(send.conversation),
    clientMessageId: send.clientMessageId,
    body: "text" in send.body ? send.body.text : messageBody(send.body.key, send.body.intendedUs, context.bodyBytes),
  }));
  const acks = recording.acks.map((ack) => ({
    senderUserId: userIdOf(ack.userIndex),
    conversationId: conversationIdOf(ack.conversation),
    clientMessageId: ack.clientMessageId,
    messageId: ack.messageId,
    seq: ack.seq,
  }));
  const deliveries: DeviceDeliveries[] = [];
  for (const [userIndex, userId] of context.userIds) {
    const messages = (recording.messages.get(userIndex) ?? []).map((message) => ({
      conversationId: conversationIdOf(message.conversation),
      seq: message.seq,
      messageId: message.messageId,
    }));
    // Every connection asked for its whole mailbox (resumeAfterSeq 0, see cellwire-connection.ts): each
    // conversation starts at the join point its joined event names.
    deliveries.push({ userId, deviceId: context.deviceId, startAfterSeq: 0, messages, events: recording.events.get(userIndex) ?? [] });
  }
  return { sends, acks, deliveries, database, expectComplete };
}

/**
 * Where each user's connection must have read to when the run is quiescent, as HistoryRecorder.position
 * counts it: its mailbox's head plus, per conversation it is in, the messages after its join point.
 */
export function positionsToReach(
  database: DatabaseSnapshot,
  userIndexes: ReadonlyMap<string, number>,
): { userIndex: number; position: number }[] {
  const headOf = new Map<string, number>();
  for (const message of database.messages)
    headOf.set(message.conversationId, Math.max(message.seq, headOf.get(message.conversationId) ?? 0));
  const totals = new Map<string, number>();
  for (const mailbox of database.mailboxes)
    totals.set(mailbox.userId, (totals.get(mailbox.userId) ?? 0) + mailbox.lastSeq - mailbox.floorSeq);
  for (const { conversationId, members } of database.members) {
    const head = headOf.get(conversationId) ?? 0;
    for (const { userId, joinedAfterSeq } of members) totals.set(userId, (totals.get(userId) ?? 0) + Math.max(0, head - joinedAfterSeq));
  }
  const positions: { userIndex: number; position: number }[] = [];
  for (const [userId, position] of totals) {
    const userIndex = userIndexes.get(userId);
    if (userIndex !== undefined) positions.push({ userIndex, position });
  }
  return positions;
}
