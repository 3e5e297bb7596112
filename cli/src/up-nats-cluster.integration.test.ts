// `cellwire up --nats-cluster` (npm start -- --nats-cluster) as a user runs it: the launcher starts a
// 3-node NATS cluster on loopback and the topology on it, and prints every node. Alice and bob chat across
// the two edges; the node serving the most Cellwire processes is SIGKILLed; every process that was on it
// must show up on a survivor (so each was given every node's URL), and the chat goes on with nothing lost,
// doubled or reordered in bob's copy and in the conversation's history. Ctrl-C's SIGTERM then stops
// everything and no nats-server of the cluster is left running.
import { afterAll, beforeAll, expect, it, onTestFailed } from "vitest";
import { WebSocket } from "ws";
import { CellwireClient, type Ack, type Message } from "@cellwire/client";
import { defaultDevKeyDirectory, signDevToken } from "@cellwire/edge/dev-keys";
import { pollUntil } from "@cellwire/testkit";
import { removeLauncherNamespace, startLauncher, stopLauncher, type RunningLauncher } from "../test/launcher.ts";
import { connectionNamesAt } from "../test/nats-cluster.ts";
import { uniqueNamespace } from "./test-topology.ts";

/** Cluster election, the web page's build, two cells' databases and rings, two edges. */
const startDeadlineMs = 60_000;
/** How long the processes of the killed node may take to show up on the survivors. */
const reconnectDeadlineMs = 15_000;
/** The edges drain (EDGE_DRAIN_MS) before the launcher stops the cluster. */
const stopDeadlineMs = 30_000;
const messagesBeforeKill = 10;
const messagesAfterKill = 20;
/** A send the SDK gave up on (a cell's ring reforming after the kill) is retried with its clientMessageId, as an app would. */
const sendAttemptsMax = 6;
const cellIds = ["a", "b"] as const;

type NodeLine = { readonly name: string; readonly clientUrl: string; readonly monitorUrl: string; readonly pid: number };

const namespace = uniqueNamespace("upnats");
let retries = 0;
let output: string[] = [];
const clients: CellwireClient[] = [];
let launcher: RunningLauncher | undefined;
let nodes: NodeLine[] = [];
let edgeUrls: string[] = [];

function isRunning(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

function bannerNodes(): NodeLine[] {
  return output.flatMap((line) => {
    const match = /^ +nats (n\d+): client (\S+) +monitoring (\S+) +pid (\d+)$/.exec(line);
    return match === null ? [] : [{ name: match[1] ?? "", clientUrl: match[2] ?? "", monitorUrl: match[3] ?? "", pid: Number(match[4]) }];
  });
}

async function cellwireConnectionsAt(node: NodeLine): Promise<string[]> {
  return (await connectionNamesAt(node.monitorUrl)).filter((name) => name.startsWith("cellwire-"));
}

async function device(userId: string, edgeIndex: number): Promise<{ client: CellwireClient; received: Message[] }> {
  const urls = [...edgeUrls.slice(edgeIndex), ...edgeUrls.slice(0, edgeIndex)];
  const client = new CellwireClient({
    url: urls,
    deviceId: "phone",
    WebSocket,
    tokenProvider: () => signDevToken(defaultDevKeyDirectory, userId, { deviceId: "phone" }),
  });
  clients.push(client);
  const received: Message[] = [];
  client.on("message", (message) => received.push(message));
  await client.connect();
  return { client, received };
}

async function withRetries<T>(request: () => Promise<T>): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await request();
    } catch (error) {
      if (attempt >= sendAttemptsMax) throw error;
      retries++;
    }
  }
}

function sendWithRetries(client: CellwireClient, conversationId: string, body: string): Promise<Ack> {
  const clientMessageId = `m-${body}`;
  return withRetries(() => client.send(conversationId, body, { clientMessageId }));
}

beforeAll(async () => {
  // The admin API too on a free port: another launcher on this machine may hold 8090.
  launcher = await startLauncher(["--nats-cluster"], namespace, startDeadlineMs, { ADMIN_PORT: "0" });
  output = launcher.output;
  nodes = bannerNodes();
  edgeUrls = output.flatMap((line) => /^ +edge \d+: (ws:\/\/\S+)/.exec(line)?.[1] ?? []);
}, startDeadlineMs + 10_000);

afterAll(async () => {
  for (const client of clients) client.close();
  // A launcher still running after a failure is stopped as Ctrl-C would; a node it left behind is killed.
  await stopLauncher(launcher, stopDeadlineMs);
  for (const node of nodes) if (isRunning(node.pid)) process.kill(node.pid, "SIGKILL");
  // The buckets went with the cluster's store; the databases and the directory's keys stay on the shared services.
  await removeLauncherNamespace(namespace, cellIds);
}, stopDeadlineMs + 20_000);

it("runs the topology on a 3-node NATS cluster that survives losing a node, and stops it", async () => {
  onTestFailed(() => {
    process.stderr.write(`cellwire up output:\n${output.slice(-200).join("\n")}\n`);
  });
  expect(nodes.map((node) => node.name)).toEqual(["n1", "n2", "n3"]);
  expect(new Set(nodes.map((node) => node.clientUrl)).size).toBe(3);
  expect(output.some((line) => line.includes("replicated 3 times"))).toBe(true);
  expect(edgeUrls).toHaveLength(2);

  const alice = await device("alice", 0);
  const bob = await device("bob", 1);
  const conversationId = (await alice.client.openDirect("bob")).conversationId;
  const acks: Ack[] = [];
  for (let index = 0; index < messagesBeforeKill; index++)
    acks.push(await sendWithRetries(alice.client, conversationId, `before-${index}`));

  const counts = await Promise.all(nodes.map(async (node) => (await cellwireConnectionsAt(node)).length));
  const victim = nodes[counts.indexOf(Math.max(...counts))];
  if (victim === undefined) throw new Error("no NATS node to kill");
  const stranded = await cellwireConnectionsAt(victim);
  expect(stranded.length).toBeGreaterThan(0);
  process.kill(victim.pid, "SIGKILL");
  const killedAtMs = performance.now();
  await pollUntil(`NATS node ${victim.name} to die`, () => (isRunning(victim.pid) ? undefined : true), { deadlineMs: 5000 });
  const survivors = nodes.filter((node) => node !== victim);
  await pollUntil(
    `the processes on ${victim.name} (${stranded.join(", ")}) to reconnect to a survivor`,
    async () => {
      const connected = new Set((await Promise.all(survivors.map((node) => cellwireConnectionsAt(node)))).flat());
      return stranded.every((name) => connected.has(name)) ? true : undefined;
    },
    { deadlineMs: reconnectDeadlineMs, intervalMs: 100 },
  );
  const reconnectedAfterMs = performance.now() - killedAtMs;
  for (let index = 0; index < messagesAfterKill; index++) acks.push(await sendWithRetries(alice.client, conversationId, `after-${index}`));
  const sentAfterMs = performance.now() - killedAtMs;

  // Nothing lost, doubled or reordered: bob's copy and the history are the acked messages, in seq order.
  const expected = acks.map((ack) => ({ seq: ack.seq, messageId: ack.messageId }));
  expect(expected.map((entry) => entry.seq)).toEqual(expected.map((_, index) => index + 1));
  const total = messagesBeforeKill + messagesAfterKill;
  await pollUntil(`bob to hold ${total} messages`, () => (bob.received.length >= total ? true : undefined), {
    deadlineMs: 15_000,
    detail: () => `bob holds ${bob.received.length}`,
  });
  expect(bob.received.map((message) => ({ seq: message.seq, messageId: message.messageId }))).toEqual(expected);
  // Read as an app would after a node loss: a read the SDK gave up on (the ring still reforming) is asked again.
  const history = await withRetries(() => bob.client.history(conversationId, { limit: total + 10 }));
  expect(history.messages.map((message) => ({ seq: message.seq, messageId: message.messageId }))).toEqual(expected);

  for (const client of clients) client.close();
  launcher?.child.kill("SIGTERM");
  let timer: ReturnType<typeof setTimeout> | undefined;
  const status = await Promise.race([
    launcher?.exited,
    new Promise<"timeout">((resolve) => (timer = setTimeout(() => resolve("timeout"), stopDeadlineMs))),
  ]);
  clearTimeout(timer);
  expect(status).toBe(0);
  process.stdout.write(
    `up --nats-cluster: SIGKILL NATS ${victim.name}; its ${stranded.length} Cellwire connections were on survivors after ${reconnectedAfterMs.toFixed(0)} ms, ` +
      `${messagesAfterKill} more messages acked ${sentAfterMs.toFixed(0)} ms after the kill, ${retries} app-level retries\n`,
  );
  expect(output).toContain("stopped.");
  expect(nodes.filter((node) => isRunning(node.pid)).map((node) => node.name)).toEqual([]);
}, 90_000);
