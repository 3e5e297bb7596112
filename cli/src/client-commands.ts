// The client-side commands: each connects to an edge through the SDK, as any client does.
import { createInterface } from "node:readline";
import { WebSocket } from "ws";
import { CellwireClient } from "@cellwire/client";
import { defaultDevKeyDirectory, signDevToken } from "@cellwire/edge/dev-keys";

export type ConnectionOptions = { readonly edgeUrl: string; readonly deviceId: string; readonly token: string | undefined };

const connectDeadlineMs = 15_000;

function printJson(value: unknown): void {
  process.stdout.write(`${JSON.stringify(value)}\n`);
}

export async function runToken(userId: string, deviceId: string | undefined): Promise<number> {
  const token = await signDevToken(defaultDevKeyDirectory, userId, deviceId === undefined ? {} : { deviceId });
  process.stdout.write(`${token}\n`);
  return 0;
}

async function withDeadline<T>(promise: Promise<T>, deadlineMs: number, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} did not complete within ${deadlineMs} ms`)), deadlineMs);
  });
  try {
    return await Promise.race([promise, deadline]);
  } finally {
    clearTimeout(timer);
  }
}

function createClient(userId: string, options: ConnectionOptions, resumeAfterSeq?: number): CellwireClient {
  return new CellwireClient({
    url: options.edgeUrl,
    deviceId: options.deviceId,
    WebSocket,
    ...(resumeAfterSeq === undefined ? {} : { resumeAfterSeq }),
    tokenProvider: async () => options.token ?? (await signDevToken(defaultDevKeyDirectory, userId, { deviceId: options.deviceId })),
  });
}

/** Connects within a deadline; listeners MUST be added before, since events may follow the welcome at once. */
async function connectWithin(client: CellwireClient, options: ConnectionOptions): Promise<CellwireClient> {
  try {
    await withDeadline(client.connect(), connectDeadlineMs, `connecting to ${options.edgeUrl}`);
  } catch (error) {
    client.close();
    throw error;
  }
  return client;
}

function connectAs(userId: string, options: ConnectionOptions): Promise<CellwireClient> {
  return connectWithin(createClient(userId, options), options);
}

async function* inputLines(): AsyncGenerator<string> {
  for await (const line of createInterface({ input: process.stdin, crlfDelay: Infinity })) {
    if (line.trim() !== "") yield line;
  }
}

/** Where a send goes: the direct conversation with a peer, or a conversation by id (a group). */
export type SendTarget = { readonly peerUserId: string } | { readonly conversationId: string };
export type SendOptions = ConnectionOptions & { readonly userId: string; readonly target: SendTarget; readonly text: string | undefined };

/** Sends one message, or each stdin line in order (each waits for the previous ack); non-zero if any failed. */
export async function runSend(options: SendOptions): Promise<number> {
  const client = await connectAs(options.userId, options);
  let failures = 0;
  try {
    const target = options.target;
    const conversationId = "conversationId" in target ? target.conversationId : (await client.openDirect(target.peerUserId)).conversationId;
    const texts: AsyncIterable<string> | string[] = options.text === undefined ? inputLines() : [options.text];
    for await (const text of texts) {
      try {
        const ack = await client.send(conversationId, text);
        printJson({ conversationId: ack.conversationId, messageId: ack.messageId, seq: ack.seq, sentAtMs: ack.sentAtMs });
      } catch (error) {
        failures++;
        process.stderr.write(`cellwire: send failed: ${error instanceof Error ? error.message : String(error)}\n`);
      }
    }
  } finally {
    client.close();
  }
  return failures === 0 ? 0 : 1;
}

export type ListenOptions = ConnectionOptions & {
  readonly userId: string;
  /** Exit 0 after this many lines (mailbox events and messages together). */
  readonly count: number | undefined;
  readonly timeoutMs: number | undefined;
  /**
   * Resume the mailbox after this seq (0: the whole mailbox), which also follows every conversation from
   * the user's join point, as the edge does on a resume for a conversation the hello does not list;
   * without it, start live.
   */
  readonly sinceSeq: number | undefined;
};

/**
 * Prints one JSON line per mailbox event, `{"type":"event","seq":…,"event":{…}}` (joined, receipt, or
 * `{"kind":"unknown",…}` for a kind this CLI does not know), and per message, `{"type":"message",
 * "message":{…}}` (each conversation's messages in seq order, none across conversations). With --since N:
 * the mailbox events after N, and the messages of every conversation from the user's join point (before
 * the "listening" line for the conversations the replayed joined events name, for the others once their
 * next message arrives), then live ones. Without --since: live ones only. Exits 0 after `count` lines, 1
 * on timeout.
 */
export async function runListen(options: ListenOptions): Promise<number> {
  const client = createClient(options.userId, options, options.sinceSeq);
  let printed = 0;
  let settle: (status: number) => void = () => {};
  const finished = new Promise<number>((resolve) => {
    settle = resolve;
  });
  const print = (line: unknown): void => {
    // Past the count the process is exiting; a line more would break a caller counting lines.
    if (options.count !== undefined && printed >= options.count) return;
    printJson(line);
    printed++;
    if (options.count !== undefined && printed >= options.count) settle(0);
  };
  const unsubscribeEvents = client.on("event", ({ seq, event }) => print({ type: "event", seq, event }));
  const unsubscribeMessages = client.on("message", (message) => print({ type: "message", message }));
  await connectWithin(client, options);
  // Tell a script that waits for us (tests, shell pipelines) once the backlog is read and the rest is live.
  // A count or timeout reached before that closes the client, which rejects whenSynced(): nothing to tell
  // then, and unhandled that rejection would crash the process (exit 1 even when the count was reached).
  void client.whenSynced().then(
    (seq) => process.stderr.write(`cellwire: listening as ${options.userId} on ${options.edgeUrl} (synced at ${seq})\n`),
    () => undefined,
  );
  const timer =
    options.timeoutMs === undefined
      ? undefined
      : setTimeout(() => {
          process.stderr.write(`cellwire: timed out after ${options.timeoutMs} ms with ${printed} line(s)\n`);
          settle(1);
        }, options.timeoutMs);
  const status = await finished;
  clearTimeout(timer);
  unsubscribeEvents();
  unsubscribeMessages();
  client.close();
  return status;
}

export type HistoryOptions = ConnectionOptions & { readonly userId: string; readonly peerUserId: string; readonly limit: number };

/** Prints the newest `limit` messages of the direct conversation, oldest first. */
export async function runHistory(options: HistoryOptions): Promise<number> {
  const client = await connectAs(options.userId, options);
  try {
    const conversation = await client.openDirect(options.peerUserId);
    const pages: unknown[][] = [];
    let collected = 0;
    let beforeSeq: number | undefined;
    while (collected < options.limit) {
      const page = await client.history(conversation.conversationId, {
        limit: Math.min(200, options.limit - collected),
        ...(beforeSeq === undefined ? {} : { beforeSeq }),
      });
      pages.unshift(page.messages);
      collected += page.messages.length;
      const oldest = page.messages[0];
      if (!page.hasMore || oldest === undefined) break;
      beforeSeq = oldest.seq;
    }
    for (const page of pages) for (const message of page) printJson(message);
    return 0;
  } finally {
    client.close();
  }
}

export type ReadOptions = ConnectionOptions & { readonly userId: string; readonly target: SendTarget; readonly seq: number | undefined };

/** Marks a conversation read up to `seq` (default: its last message); prints the positions as JSON. */
export async function runRead(options: ReadOptions): Promise<number> {
  const client = await connectAs(options.userId, options);
  try {
    const target = options.target;
    let conversationId: string;
    let lastSeq: number;
    if ("peerUserId" in target) {
      const conversation = await client.openDirect(target.peerUserId);
      conversationId = conversation.conversationId;
      lastSeq = conversation.lastSeq;
    } else {
      conversationId = target.conversationId;
      lastSeq = (await client.history(conversationId, { limit: 1 })).messages.at(-1)?.seq ?? 0;
    }
    const seq = options.seq ?? lastSeq;
    if (seq < 1) {
      process.stderr.write("cellwire: the conversation has no message to mark read\n");
      return 1;
    }
    printJson(await client.markRead(conversationId, seq));
    return 0;
  } finally {
    client.close();
  }
}
