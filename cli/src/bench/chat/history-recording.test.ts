import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { checkHistory, type DatabaseSnapshot } from "@cellwire/loadtest";
import type { JoinedEvent, Message } from "@cellwire/protocol";
import {
  HistoryRecorder,
  positionsToReach,
  readRecordings,
  RecordingFormatError,
  toHistoryRecord,
  type RecordingContext,
} from "./history-recording.ts";
import { messageBody } from "./workload.ts";

const directory = mkdtempSync(join(tmpdir(), "cellwire-history-recording-"));
afterAll(() => rmSync(directory, { recursive: true, force: true }));

const conversationId = "d-AAAAAAAAAAAAAAAAAAAAAA";
const bodyBytes = 64;
const context: RecordingContext = {
  userIds: new Map([
    [0, "run-u0"],
    [1, "run-u1"],
  ]),
  deviceId: "bench",
  conversationIds: [conversationId],
  bodyBytes,
};

function stored(seq: number, clientMessageId: string, body: string): Message {
  return {
    conversationId,
    seq,
    messageId: `m${seq}`,
    senderUserId: "run-u0",
    senderDeviceId: "bench",
    clientMessageId,
    body,
    sentAtMs: 1000 + seq,
  };
}

/** One user sends two messages to a pair; both members receive the joined event and both messages. */
async function recordPair(path: string): Promise<{ database: DatabaseSnapshot }> {
  const recorder = new HistoryRecorder(path, bodyBytes);
  recorder.setConversations(new Map([[conversationId, 0]]));
  const sender = recorder.observerOf(0);
  const receiver = recorder.observerOf(1);
  const bodies = [messageBody(7, 1_765_000_000_000_000, bodyBytes), "a body of someone else's making\twith a tab"];
  const messages = bodies.map((body, index) => stored(index + 1, `c${index}`, body));
  const joined: JoinedEvent = {
    kind: "joined",
    conversationId,
    conversationKind: "direct",
    title: null,
    afterSeq: 0,
    addedByUserId: "run-u0",
  };
  for (const observer of [sender, receiver]) observer.receivedEvent({ seq: 1, event: joined });
  for (const message of messages) {
    sender.sending(message.clientMessageId, conversationId, message.body);
    sender.acknowledged({
      conversationId,
      messageId: message.messageId,
      seq: message.seq,
      sentAtMs: message.sentAtMs,
      clientMessageId: message.clientMessageId,
    });
    for (const observer of [sender, receiver]) observer.received(message);
  }
  expect(recorder.position(1)).toBe(3);
  await recorder.close();
  const mailbox = (userId: string): DatabaseSnapshot["mailboxes"][number] => ({
    userId,
    lastSeq: 1,
    floorSeq: 0,
    events: [{ seq: 1, eventId: `joined-${conversationId}`, event: joined }],
  });
  return {
    database: {
      messages,
      members: [
        {
          conversationId,
          members: [
            { userId: "run-u0", joinedAfterSeq: 0 },
            { userId: "run-u1", joinedAfterSeq: 0 },
          ],
        },
      ],
      mailboxes: [mailbox("run-u0"), mailbox("run-u1")],
    },
  };
}

describe("the history recording", () => {
  it("gives the checker a record that passes for a clean run", async () => {
    const path = join(directory, "clean.tsv");
    const { database } = await recordPair(path);
    const record = toHistoryRecord(await readRecordings([path]), context, database, true);
    expect(record.sends.map((send) => send.body)).toEqual(database.messages.map((message) => message.body));
    expect(record.deliveries.map((device) => device.messages.length)).toEqual([2, 2]);
    expect(record.deliveries.map((device) => device.events.length)).toEqual([1, 1]);
    const report = checkHistory(record);
    expect(report.summary).toMatch(/^history check passed/);
  });

  it("lets the checker see a message the database does not explain", async () => {
    const path = join(directory, "phantom.tsv");
    const { database } = await recordPair(path);
    // The database lost message 2: the devices' copies become phantoms and the ack is acked_but_lost.
    const damaged = { ...database, messages: database.messages.slice(0, 1) };
    const report = checkHistory(toHistoryRecord(await readRecordings([path]), context, damaged, false));
    expect(report.ok).toBe(false);
    expect(report.counts.acked_but_lost).toBe(1);
    expect(report.counts.phantom).toBeGreaterThan(0);
  });

  it("names where each user must read to: its mailbox head plus each conversation's messages after its join point", async () => {
    const { database } = await recordPair(join(directory, "positions.tsv"));
    expect(positionsToReach(database, new Map([["run-u1", 1]]))).toEqual([{ userIndex: 1, position: 3 }]);
    const joinedLater = { ...database, members: [{ conversationId, members: [{ userId: "run-u1", joinedAfterSeq: 1 }] }] };
    expect(positionsToReach(joinedLater, new Map([["run-u1", 1]]))).toEqual([{ userIndex: 1, position: 2 }]);
  });

  it("refuses a malformed line, naming it", async () => {
    const path = join(directory, "malformed.tsv");
    writeFileSync(path, "m\t0\t#0\t1\tm1\nm\t0\t#0\tnot-a-number\tm2\n");
    await expect(readRecordings([path])).rejects.toThrow(RecordingFormatError);
    await expect(readRecordings([path])).rejects.toThrow(/malformed\.tsv:2: field 3/);
  });
});
