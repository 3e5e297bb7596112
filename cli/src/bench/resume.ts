// Resume benchmark: how long a device that was away takes to receive what it missed. Runs the `npm start`
// topology on a fresh namespace; a reader follows K direct conversations (with K writers, half of them
// homed in the other cell), goes away, the writers send N messages in all, then the reader's device comes
// back with its cursors (the SDK's positions) and the time from connect() to its `synced` is measured,
// with every missed message received once and in order per conversation. Then a new device of the reader
// (no cursors: every conversation from its join point) does the same. Prints one JSON line per resume.
//
//   npm run bench:resume -- [--messages 10000] [--conversations 10] [--rounds 3]
import { parseArgs } from "node:util";
import { WebSocket } from "ws";
import { CellwireClient, type Positions } from "@cellwire/client";
import { defaultDevKeyDirectory, signDevToken } from "@cellwire/edge/dev-keys";
import { placeUsers, startTestTopology } from "../test-topology.ts";

const { values } = parseArgs({
  options: {
    messages: { type: "string", default: "10000" },
    conversations: { type: "string", default: "10" },
    rounds: { type: "string", default: "3" },
  },
});
const messageCount = Number(values.messages);
const conversationCount = Number(values.conversations);
const rounds = Number(values.rounds);
if (![messageCount, conversationCount, rounds].every((value) => Number.isSafeInteger(value) && value > 0)) {
  throw new Error("--messages, --conversations and --rounds take positive integers");
}
/** Sends in flight per writer: enough to fill a batch, below the edge's per-session limit (64). */
const sendsInFlightMax = 48;

process.stderr.write(
  `resume bench: ${messageCount} missed messages over ${conversationCount} conversations, ${rounds} rounds; starting the topology…\n`,
);
// The launcher's settings (npm start), not the tests' short leases. The writers fill the logs as fast as the
// cells take them: the send rate limits (20 a second per session by default) would make that setup, not
// what this bench measures, take minutes, so they are lifted here.
const sendRateUnlimited = { perSecond: "1000000", burst: "10000000" };
const test = await startTestTopology({
  label: "resume",
  extraEnvironment: {
    WORKER_LEASE_MS: "1500",
    WORKER_HEARTBEAT_INTERVAL_MS: "300",
    EDGE_LEASE_MS: "1500",
    EDGE_RATE_SENDS_PER_SESSION_PER_SECOND: sendRateUnlimited.perSecond,
    EDGE_RATE_SENDS_PER_SESSION_BURST: sendRateUnlimited.burst,
    EDGE_RATE_SENDS_PER_USER_PER_SECOND: sendRateUnlimited.perSecond,
    EDGE_RATE_SENDS_PER_USER_BURST: sendRateUnlimited.burst,
  },
});
const urls = test.topology.edges.map((edge) => edge.webSocketUrl);
const clients: CellwireClient[] = [];

function client(userId: string, deviceId: string, resume: Positions | undefined): CellwireClient {
  const created = new CellwireClient({
    url: urls,
    deviceId,
    WebSocket,
    requestTimeoutMs: 60_000,
    tokenProvider: () => signDevToken(defaultDevKeyDirectory, userId, { deviceId }),
    ...(resume === undefined
      ? { resumeAfterSeq: 0 }
      : {
          resumeAfterSeq: resume.mailboxSeq ?? 0,
          resumeMailboxIncarnation: resume.mailboxIncarnation,
          resumeConversations: resume.conversations,
        }),
  });
  clients.push(created);
  return created;
}

/** Connects and waits for the first `synced`; returns how long it took and the messages received until then. */
async function connectAndSync(device: CellwireClient): Promise<{ syncedMs: number; received: Map<string, number[]> }> {
  const received = new Map<string, number[]>();
  device.on("message", (message) => {
    const seqs = received.get(message.conversationId) ?? [];
    seqs.push(message.seq);
    received.set(message.conversationId, seqs);
  });
  const startedAt = performance.now();
  const synced = device.whenSynced();
  await device.connect();
  await synced;
  return { syncedMs: performance.now() - startedAt, received: new Map(received) };
}

try {
  const reader = "bench-reader";
  const writers = Array.from({ length: conversationCount }, (_, index) => `bench-writer-${index}`);
  await placeUsers(test, [[reader, "a"], ...writers.map((writer, index): [string, string] => [writer, index % 2 === 0 ? "a" : "b"])]);
  const writerClients = writers.map((writer) => client(writer, "desk", undefined));
  await Promise.all(writerClients.map((writerClient) => writerClient.connect()));
  const conversationIds = await Promise.all(
    writerClients.map(async (writerClient) => (await writerClient.openDirect(reader)).conversationId),
  );

  // The reader's device learns its conversations (joined events) and goes away with its positions.
  const first = client(reader, "phone", undefined);
  await connectAndSync(first);
  let positions = first.positions();
  first.close();

  const heads = new Map(conversationIds.map((conversationId) => [conversationId, 0]));
  for (let round = 1; round <= rounds; round++) {
    // The writers send their share while the reader is away.
    const perWriter = Math.ceil(messageCount / conversationCount);
    await Promise.all(
      writerClients.map(async (writerClient, index) => {
        const conversationId = conversationIds[index] ?? "";
        let next = 0;
        const lane = async (): Promise<void> => {
          while (next < perWriter) {
            next++;
            const ack = await writerClient.send(conversationId, `round ${round} message ${next} `.padEnd(100, "x"));
            heads.set(conversationId, Math.max(heads.get(conversationId) ?? 0, ack.seq));
          }
        };
        await Promise.all(Array.from({ length: sendsInFlightMax }, lane));
      }),
    );
    const missed = perWriter * conversationCount;
    const returning = client(reader, "phone", positions);
    const resumed = await connectAndSync(returning);
    const checks = [...heads].map(([conversationId, head]) => {
      const seqs = resumed.received.get(conversationId) ?? [];
      const from = positions.conversations[conversationId] ?? 0;
      return seqs.length === head - from && seqs.every((seq, index) => seq === from + index + 1);
    });
    positions = returning.positions();
    returning.close();
    process.stdout.write(
      `${JSON.stringify({ resume: "device with cursors", round, missedMessages: missed, conversations: conversationCount, syncedMs: Math.round(resumed.syncedMs), everyMessageOnceInOrder: checks.every(Boolean) })}\n`,
    );
  }
  const fresh = client(reader, `tablet-${Date.now().toString(36)}`, undefined);
  const fromScratch = await connectAndSync(fresh);
  const total = [...fromScratch.received.values()].reduce((sum, seqs) => sum + seqs.length, 0);
  process.stdout.write(
    `${JSON.stringify({ resume: "new device, every conversation from its join point", messages: total, conversations: fromScratch.received.size, syncedMs: Math.round(fromScratch.syncedMs) })}\n`,
  );
} finally {
  for (const each of clients) each.close();
  await test.destroy();
}
