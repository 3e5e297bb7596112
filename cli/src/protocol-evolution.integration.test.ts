// The SDK as released before issue 10 against today's edge (docs/decisions/0010): clients keep an old SDK
// for months, so every change to the edge must leave it able to connect, send, receive, resume, follow a
// draining edge to another, and carry on through frames, fields and codes it has never seen. The SDK is
// built from the pinned commit's git objects (cli/test/pinned-sdk.ts); today's SDK is not used here at all.
//
// To extend: a new server frame, field, error code or close code that the chat below does not make the
// edge send goes into `newerEdgeTraffic`, as a rewrite of what the edge sends (cli/test/frame-proxy.ts); what the
// edge does send in the chat is covered as it is.
import { afterAll, beforeAll, describe, expect, it, onTestFailed } from "vitest";
import { WebSocket } from "ws";
import { defaultDevKeyDirectory, signDevToken } from "@cellwire/edge/dev-keys";
import { closeCodes } from "@cellwire/protocol";
import { FrameProxy, type EdgeFrameRewrite } from "../test/frame-proxy.ts";
import { loadPinnedSdk, type PinnedClient, type PinnedClientError, type PinnedMessage, type PinnedSdk } from "../test/pinned-sdk.ts";
import { startTestTopology, type TestTopology } from "./test-topology.ts";

/** main before issue 10 ("Secure by default"): the last SDK released without any of its changes. */
const pinnedCommit = "c62252f7fe91ae99013e7b8e675c97078df47941";
const waitMs = 20_000;

let sdk: PinnedSdk;
let test: TestTopology;
const clients: PinnedClient[] = [];
const proxies: FrameProxy[] = [];

beforeAll(async () => {
  sdk = await loadPinnedSdk(pinnedCommit);
  test = await startTestTopology({ label: "evolve", extraEnvironment: { EDGE_DRAIN_MS: "1000", EDGE_DRAIN_GRACE_MS: "2000" } });
});

afterAll(async () => {
  for (const client of clients.splice(0)) client.close();
  for (const proxy of proxies.splice(0)) await proxy.stop();
  await test?.destroy();
  await sdk?.dispose();
});

/** One device on the pinned SDK, with what it received. */
type OldDevice = {
  readonly client: PinnedClient;
  readonly messages: PinnedMessage[];
  readonly errors: PinnedClientError[];
  readonly closeCodes: (number | null)[];
  /** Resolves once the device holds `count` messages of the conversation; fails after waitMs. */
  untilMessages(conversationId: string, count: number): Promise<void>;
};

async function openOldDevice(userId: string, deviceId: string, url: string | readonly string[], resume?: PinnedClient): Promise<OldDevice> {
  const positions = resume?.positions();
  const client = new sdk.CellwireClient({
    url,
    deviceId,
    WebSocket,
    tokenProvider: () => signDevToken(defaultDevKeyDirectory, userId, { deviceId }),
    requestTimeoutMs: waitMs,
    ...(positions === undefined ? {} : { resumeAfterSeq: positions.lastSeq ?? 0, resumeConversations: positions.conversations }),
  });
  clients.push(client);
  const messages: PinnedMessage[] = [];
  const errors: PinnedClientError[] = [];
  const closes: (number | null)[] = [];
  const wakes = new Set<() => void>();
  client.on("message", (message) => {
    messages.push(message);
    for (const wake of [...wakes]) wake();
  });
  client.on("error", (error) => errors.push(error));
  client.on("state", ({ previousState, closeCode }) => {
    if (previousState === "open") closes.push(closeCode);
  });
  const synced = client.whenSynced();
  await client.connect();
  await synced;
  return {
    client,
    messages,
    errors,
    closeCodes: closes,
    untilMessages: (conversationId, count) =>
      new Promise((resolve, reject) => {
        const check = (): void => {
          if (messages.filter((message) => message.conversationId === conversationId).length < count) return;
          clearTimeout(timer);
          wakes.delete(check);
          resolve();
        };
        const timer = setTimeout(() => {
          wakes.delete(check);
          const held = messages.filter((message) => message.conversationId === conversationId).map((message) => message.seq);
          reject(new Error(`${userId}/${deviceId} holds seqs [${held.join(",")}] of ${conversationId}, waited for ${count}`));
        }, waitMs);
        wakes.add(check);
        check();
      }),
  };
}

/** The seqs of one conversation a device received, in order: they must be 1..n with no gap or repeat. */
function seqsOf(device: OldDevice, conversationId: string): number[] {
  return device.messages.filter((message) => message.conversationId === conversationId).map((message) => message.seq);
}

function oneToN(count: number, from = 1): number[] {
  return Array.from({ length: count }, (_, index) => from + index);
}

/**
 * A chat between two old devices, `viaProxy` (through the rewriting proxy) and `direct`: a direct
 * conversation, `count` messages each way; both receive every one, in order, once.
 */
async function chat(viaProxy: OldDevice, direct: OldDevice, peerUserId: string, count: number): Promise<string> {
  const conversation = await viaProxy.client.openDirect(peerUserId);
  const { conversationId } = conversation;
  const acks: number[] = [];
  for (let index = 0; index < count; index++) acks.push((await viaProxy.client.send(conversationId, `old sdk ${index}`)).seq);
  for (let index = 0; index < count; index++) acks.push((await direct.client.send(conversationId, `reply ${index}`)).seq);
  expect(acks).toEqual(oneToN(2 * count));
  await Promise.all([viaProxy.untilMessages(conversationId, 2 * count), direct.untilMessages(conversationId, 2 * count)]);
  expect(seqsOf(viaProxy, conversationId)).toEqual(oneToN(2 * count));
  expect(seqsOf(direct, conversationId)).toEqual(oneToN(2 * count));
  return conversationId;
}

it(`connects, sends, receives and resumes with the SDK of ${pinnedCommit.slice(0, 12)} against today's edge`, async () => {
  const urls = test.topology.edges.map((edge) => edge.webSocketUrl);
  const alice = await openOldDevice("alice", "phone", urls);
  const bob = await openOldDevice("bob", "phone", [...urls].reverse());
  const conversationId = await chat(alice, bob, "bob", 3);

  // Bob goes away; alice goes on; bob comes back from where he was and gets exactly what he missed.
  bob.client.close();
  for (let index = 0; index < 4; index++) await alice.client.send(conversationId, `while bob was away ${index}`);
  const bobAgain = await openOldDevice("bob", "phone", urls, bob.client);
  await bobAgain.untilMessages(conversationId, 4);
  expect(seqsOf(bobAgain, conversationId)).toEqual(oneToN(4, 7));
  for (const device of [alice, bob, bobAgain]) expect(device.errors).toEqual([]);
});

it(`follows a draining edge to the other one and resumes, with the SDK of ${pinnedCommit.slice(0, 12)}`, async () => {
  onTestFailed(() => {
    process.stdout.write(
      `${test.output
        .filter((line) => line.includes("cellwire-edge"))
        .slice(-40)
        .join("\n")}\n`,
    );
  });
  const [first, second] = test.topology.edges;
  if (first === undefined || second === undefined) throw new Error("two edges expected");
  const urls = [first.webSocketUrl, second.webSocketUrl];
  const carol = await openOldDevice("carol", "phone", urls);
  const dave = await openOldDevice("dave", "phone", urls);
  const { conversationId } = await carol.client.openDirect("dave");
  let stopping = false;
  let sent = 0;
  const traffic = (async () => {
    while (!stopping || sent < 5) {
      await carol.client.send(conversationId, `through the drain ${sent}`);
      sent++;
    }
  })();
  const exitCode = await test.topology.signal(`cellwire-edge-${first.edgeId}`, "SIGTERM");
  expect(exitCode).toBe(0);
  await test.topology.respawn(`cellwire-edge-${first.edgeId}`);
  stopping = true;
  await traffic;
  await Promise.all([carol.untilMessages(conversationId, sent), dave.untilMessages(conversationId, sent)]);
  for (const device of [carol, dave]) {
    // Closed by the drain with going_away, then open again on the other edge, every message once, in order.
    expect(device.closeCodes).toEqual([closeCodes.going_away.code]);
    expect(device.client.state).toBe("open");
    expect(device.client.url).toBe(second.webSocketUrl);
    expect(seqsOf(device, conversationId)).toEqual(oneToN(sent));
    expect(device.errors).toEqual([]);
  }
});

/**
 * What a newer edge may send that the pinned SDK has never seen, made by rewriting today's edge's frames.
 * Add an entry for each new server frame, field, error code or close code that the chat does not make
 * today's edge send on its own; decision 0010 says how the old SDK must take it: with no client error, and
 * with `reconnects` closes of its session (none unless the entry closes it).
 */
type NewerEdgeTraffic = { readonly name: string; readonly rewrite: () => EdgeFrameRewrite; readonly reconnects?: number };

function frameOf(text: string): Record<string, unknown> {
  const parsed: unknown = JSON.parse(text);
  if (typeof parsed !== "object" || parsed === null || Array.isArray(parsed))
    throw new Error(`the edge sent a frame that is not an object: ${text}`);
  return parsed as Record<string, unknown>;
}

const newerEdgeTraffic: readonly NewerEdgeTraffic[] = [
  {
    name: "a field it does not know in every server frame",
    rewrite: () => (text) => ({ frames: [JSON.stringify({ ...frameOf(text), addedByANewerEdge: { nested: [1, "two"] } })] }),
  },
  {
    name: "a server frame of a type it does not know before every frame",
    rewrite: () => (text) => ({ frames: [JSON.stringify({ type: "newerEdgeNotice", detail: "ignore me" }), text] }),
  },
  {
    name: "an error code it does not know, retryable, with retryAfterMs, instead of the first ack",
    rewrite: () => {
      let replaced = false;
      return (text) => {
        const frame = frameOf(text);
        if (replaced || frame["type"] !== "ack") return { frames: [text] };
        replaced = true;
        // The send was stored; the retry the SDK makes is deduplicated by its clientMessageId.
        return {
          frames: [
            JSON.stringify({
              type: "error",
              requestId: frame["requestId"],
              code: "newer_edge_busy",
              message: "a code from the future",
              retryable: true,
              retryAfterMs: 200,
            }),
          ],
        };
      };
    },
  },
  {
    name: "a close code it does not know in the reconnect range, after the first ack",
    reconnects: 1,
    rewrite: () => {
      let closed = false;
      return (text) => {
        if (closed || frameOf(text)["type"] !== "ack") return { frames: [text] };
        closed = true;
        return { frames: [text], close: { code: 4099, reason: "a newer edge's reason to reconnect" } };
      };
    },
  },
];

describe(`the SDK of ${pinnedCommit.slice(0, 12)} chats on, every message once and in order, through`, () => {
  it.each(newerEdgeTraffic.map((traffic, index) => ({ ...traffic, index })))("$name", async (traffic) => {
    const [edge] = test.topology.edges;
    if (edge === undefined) throw new Error("an edge expected");
    const proxy = await FrameProxy.start(edge.webSocketUrl, traffic.rewrite());
    proxies.push(proxy);
    const erin = await openOldDevice(`erin${traffic.index}`, "phone", proxy.url);
    const frank = await openOldDevice(`frank${traffic.index}`, "phone", edge.webSocketUrl);
    await chat(erin, frank, `frank${traffic.index}`, 3);
    expect(erin.errors.map((error) => `${error.code}: ${error.message}`)).toEqual([]);
    expect(erin.closeCodes).toHaveLength(traffic.reconnects ?? 0);
    expect(erin.client.state).toBe("open");
  });
});
