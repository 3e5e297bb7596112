// Cellwire on a 3-node NATS cluster keeps working when one node dies: the membership buckets are
// replicated three times (WORKER_KV_REPLICAS=3), three users on five devices exchange direct and group
// messages across both edges and both cells, and the NATS node that leads cell a's bucket (so a new
// stream leader must be elected under traffic) is SIGKILLed in the middle. Every process that was
// connected to it must reconnect to a survivor, and the history checker must find nothing lost, doubled
// or reordered, with every device converged on each of its conversations and on its mailbox.
import { afterAll, beforeAll, expect, it, onTestFailed } from "vitest";
import type { NatsConnection } from "@nats-io/transport-node";
import { DirectoryClient } from "@cellwire/cluster";
import { membershipBucket } from "@cellwire/protocol";
import { clusterTopologyEnvironment, connectionNames, startNatsCluster, streamPlacement, type NatsCluster } from "../test/nats-cluster.ts";
import { RecordedRun, type RecordedDevice } from "../test/recorded-run.ts";
import { startTestTopology, testServices, type TestTopology } from "./test-topology.ts";
import { isWarningOrError } from "../test/log-lines.ts";

/** Enough that the sends after the kill outlast the election of the bucket's new stream leader. */
const messagesTotal = 1000;
const natsNodeKilledAfterAcks = 250;
/** Sent by each device once the cluster healed (every process back, every bucket led again). */
const healedMessagesPerSender = 10;
/** A send the SDK gave up on is retried by the test with the same clientMessageId, as an app would. */
const sendAttemptsMax = 6;
/** How long the processes of the killed node may take to show up on the survivors. */
const reconnectDeadlineMs = 15_000;
const reconnectPollIntervalMs = 100;
/** How long the bucket of the dead node's stream may go without a leader. */
const leaderElectionDeadlineMs = 20_000;
/** How long after the last ack every device may take to hold every acked message and its mailbox's joined events. */
const convergeDeadlineMs = 30_000;
const cellIds = ["a", "b"] as const;

let cluster: NatsCluster | undefined;
let test: TestTopology | undefined;
let natsConnection: NatsConnection | undefined;
const run = new RecordedRun(sendAttemptsMax);

function running(): { cluster: NatsCluster; test: TestTopology } {
  if (cluster === undefined || test === undefined) throw new Error("the NATS cluster and the topology did not start");
  return { cluster, test };
}

function edgeUrls(first: number): string[] {
  const urls = running().test.topology.edges.map((edge) => edge.webSocketUrl);
  return [...urls.slice(first), ...urls.slice(0, first)];
}

/** The namespace is new: every device reads its whole mailbox (resumeAfterSeq 0), so the checker holds it to every seq. */
function openDevice(userId: string, deviceId: string, firstEdge: number): Promise<RecordedDevice> {
  return run.openDevice(userId, deviceId, edgeUrls(firstEdge), 0);
}

/** Resolves with the stream's leader once it has one other than `formerLeader`. */
async function untilNewLeader(streamName: string, formerLeader: string): Promise<string> {
  const { cluster: natsCluster } = running();
  const deadlineAt = performance.now() + leaderElectionDeadlineMs;
  while (performance.now() < deadlineAt) {
    const leader = (await streamPlacement(natsCluster, streamName))?.leader;
    if (leader !== undefined && leader !== formerLeader) return leader;
    await new Promise((resolve) => setTimeout(resolve, reconnectPollIntervalMs));
  }
  throw new Error(`${streamName} had no leader other than ${formerLeader} within ${leaderElectionDeadlineMs} ms`);
}

/** Cellwire's own connections on a node (each process names its connection after its process title). */
async function cellwireConnectionsOn(index: number): Promise<string[]> {
  return (await connectionNames(running().cluster, index)).filter((name) => name.startsWith("cellwire-"));
}

/**
 * The node that leads cell a's bucket, so the kill forces a stream leader election under traffic; should
 * no Cellwire process be connected to it (connections spread at random), the node serving the most.
 */
async function chooseNodeToKill(): Promise<{ index: number; reason: string }> {
  const { cluster: natsCluster, test: topology } = running();
  const placement = await streamPlacement(natsCluster, `KV_${membershipBucket(topology.namespace, "a")}`);
  if (placement?.leader !== undefined) {
    const index = natsCluster.indexOf(placement.leader);
    if ((await cellwireConnectionsOn(index)).length > 0) return { index, reason: "leads cell a's bucket" };
  }
  const counts = await Promise.all(natsCluster.nodes.map(async (_, index) => (await cellwireConnectionsOn(index)).length));
  const index = counts.indexOf(Math.max(...counts));
  return { index, reason: "serves the most Cellwire connections" };
}

/** Resolves once every name was seen connected to one of the live nodes. */
async function untilReconnected(names: readonly string[], deadlineMs: number): Promise<void> {
  const { cluster: natsCluster } = running();
  const deadlineAt = performance.now() + deadlineMs;
  let missing = [...names];
  while (performance.now() < deadlineAt) {
    const live = natsCluster.nodes
      .map((node, index) => ({ node, index }))
      .filter(({ node }) => natsCluster.liveServers().includes(node.clientUrl));
    const connected = new Set((await Promise.all(live.map(({ index }) => cellwireConnectionsOn(index)))).flat());
    missing = names.filter((name) => !connected.has(name));
    if (missing.length === 0) return;
    await new Promise((resolve) => setTimeout(resolve, reconnectPollIntervalMs));
  }
  throw new Error(`not reconnected to a surviving NATS node within ${deadlineMs} ms: ${missing.join(", ")}`);
}

beforeAll(async () => {
  const natsCluster = await startNatsCluster();
  cluster = natsCluster;
  test = await startTestTopology({
    label: "natscl",
    natsServers: natsCluster.servers,
    natsUsers: natsCluster.users,
    extraEnvironment: clusterTopologyEnvironment,
  }).catch((error: unknown) => {
    throw new Error(`${String(error)}\n${natsCluster.outputTail(30)}`, { cause: error });
  });
  natsConnection = await test.connectNats("admin");
  const directory = new DirectoryClient(natsConnection, test.namespace, 5000);
  for (const [userId, cellId] of [
    ["alice", "a"],
    ["bob", "b"],
    ["carol", "a"],
  ] as const) {
    await directory.assignUser(userId, cellId);
  }
});

afterAll(async () => {
  run.closeAll();
  await natsConnection?.close();
  try {
    // The cleanup's NATS connection goes to the nodes still alive.
    if (test !== undefined) await test.destroy(cluster?.liveServers() ?? testServices.natsServers);
  } finally {
    await cluster?.stop();
  }
});

it("loses, doubles and reorders nothing when one node of a 3-node NATS cluster is SIGKILLed under traffic", async () => {
  const { cluster: natsCluster, test: topology } = running();
  onTestFailed(() => {
    process.stdout.write(`${topology.output.filter(isWarningOrError).slice(-80).join("\n")}\n${natsCluster.outputTail(15)}\n`);
  });
  // Both membership buckets really are replicated on the three nodes.
  for (const cellId of cellIds) {
    const placement = await streamPlacement(natsCluster, `KV_${membershipBucket(topology.namespace, cellId)}`);
    expect(placement?.leader, `leader of cell ${cellId}'s bucket`).toBeDefined();
    expect(placement?.replicaNames, `replicas of cell ${cellId}'s bucket`).toHaveLength(2);
  }

  const alicePhone = await openDevice("alice", "phone", 0);
  const aliceLaptop = await openDevice("alice", "laptop", 1);
  const bobPhone = await openDevice("bob", "phone", 1);
  const bobTablet = await openDevice("bob", "tablet", 0);
  const carolPhone = await openDevice("carol", "phone", 0);

  const aliceBob = await alicePhone.client.openDirect("bob");
  const bobCarol = await bobPhone.client.openDirect("carol");
  const group = await carolPhone.client.createGroup("everyone", ["alice", "bob"]);
  for (const conversation of [aliceBob, bobCarol, group]) run.conversation(conversation.conversationId, conversation.memberUserIds);

  const ackTimesMs: number[] = [];
  let killedAtMs: number | undefined;
  type Kill = { nodeName: string; reason: string; connections: string[]; reconnectedAfterMs: number; elections: string[] };
  let kill: Promise<Kill> | undefined;
  const afterAck = (): void => {
    ackTimesMs.push(performance.now());
    if (ackTimesMs.length !== natsNodeKilledAfterAcks) return;
    kill = (async (): Promise<Kill> => {
      const { index, reason } = await chooseNodeToKill();
      const connections = await cellwireConnectionsOn(index);
      const nodeName = natsCluster.nodes[index]?.name ?? String(index);
      const ledStreams: string[] = [];
      for (const cellId of cellIds) {
        const streamName = `KV_${membershipBucket(topology.namespace, cellId)}`;
        if ((await streamPlacement(natsCluster, streamName))?.leader === nodeName) ledStreams.push(streamName);
      }
      const killedAt = performance.now();
      killedAtMs = killedAt;
      await natsCluster.kill(index);
      const [reconnectedAfterMs, elections] = await Promise.all([
        untilReconnected(connections, reconnectDeadlineMs).then(() => performance.now() - killedAt),
        Promise.all(
          ledStreams.map(async (streamName) => {
            const leader = await untilNewLeader(streamName, nodeName);
            return `${streamName} led by ${leader} after ${(performance.now() - killedAt).toFixed(0)} ms`;
          }),
        ),
      ]);
      return { nodeName, reason, connections, reconnectedAfterMs, elections };
    })();
    // Awaited after the traffic; a rejection meanwhile is not unhandled.
    kill.catch(() => undefined);
  };

  const senders = [alicePhone, aliceLaptop, bobPhone, carolPhone, bobTablet];
  const sendRound = (round: string, perSender: number): Promise<unknown> =>
    Promise.all(
      senders.map(async (sender) => {
        const conversations = run.conversationsOf(sender.userId);
        for (let index = 0; index < perSender; index++) {
          const conversationId = conversations[index % conversations.length] ?? "";
          await run.send(
            sender,
            conversationId,
            `message ${round}/${index} from ${sender.userId}/${sender.deviceId}`,
            `${sender.userId}-${sender.deviceId}-${round}-${index}`,
          );
          afterAck();
        }
      }),
    );

  const startedAt = performance.now();
  await sendRound("kill", messagesTotal / senders.length);
  const sendingMs = performance.now() - startedAt;
  const killRoundAckTimesMs = [...ackTimesMs];
  if (kill === undefined) throw new Error(`only ${ackTimesMs.length} acks: the NATS node was never killed`);
  // Every process is back and every bucket the dead node led has a new leader: the cluster healed.
  const killed = await kill;
  // And Cellwire still serves on the healed cluster (the leases in the re-elected bucket still stand).
  await sendRound("healed", healedMessagesPerSender);
  const sentTotal = messagesTotal + healedMessagesPerSender * senders.length;

  // Every device holds every acked message of its conversations and its mailbox's joined events; then the checker holds it to the databases.
  await run.settle(convergeDeadlineMs);
  const report = await run.check(testServices.postgresAdminUrl, topology.namespace, cellIds);
  const record = run.record;
  const messagesOf = (userId: string): number => {
    const conversations = new Set(run.conversationsOf(userId));
    return record.acks.filter((ack) => conversations.has(ack.conversationId)).length;
  };

  // Time to recover: the longest wait for the next ack once the node died, against the longest before.
  const killTime = killedAtMs ?? Number.POSITIVE_INFINITY;
  const gapsBefore = killRoundAckTimesMs
    .filter((time) => time <= killTime)
    .map((time, index, times) => time - (times[index - 1] ?? startedAt));
  const timesAfter = [killTime, ...killRoundAckTimesMs.filter((time) => time > killTime)];
  const gapsAfter = timesAfter.slice(1).map((time, index) => time - (timesAfter[index] ?? time));
  const longestGapBeforeMs = Math.max(0, ...gapsBefore);
  const longestGapAfterMs = Math.max(0, ...gapsAfter);
  process.stdout.write(
    [
      `nats-cluster: ${record.acks.length} acked of ${record.sends.length} sent (${messagesTotal} in ${(sendingMs / 1000).toFixed(1)} s around the kill, then ${sentTotal - messagesTotal} on the healed cluster), ${run.retries} app-level retries`,
      `nats-cluster: SIGKILL NATS node ${killed.nodeName} (${killed.reason}) after ${natsNodeKilledAfterAcks} acks; its ${killed.connections.length} Cellwire connections (${killed.connections.join(", ")}) were back on the survivors after ${killed.reconnectedAfterMs.toFixed(0)} ms`,
      `nats-cluster: re-elected: ${killed.elections.length === 0 ? "no bucket was led by the dead node" : killed.elections.join("; ")}`,
      `nats-cluster: longest gap between acks: ${longestGapBeforeMs.toFixed(0)} ms before the kill, ${longestGapAfterMs.toFixed(0)} ms after it (${gapsAfter.length} acks after the kill)`,
      `nats-cluster: messages in each user's conversations: alice ${messagesOf("alice")}, bob ${messagesOf("bob")}, carol ${messagesOf("carol")}`,
      `nats-cluster: checker: ${report.summary}`,
      "",
    ].join("\n"),
  );
  expect(report.findings).toEqual([]);
  expect(report.ok).toBe(true);
  expect(run.sequenceGaps).toEqual([]);
  expect(record.acks).toHaveLength(sentTotal);
  expect(record.database.messages).toHaveLength(sentTotal);
  expect(killed.connections.length).toBeGreaterThan(0);
  expect(natsCluster.liveServers()).toHaveLength(2);
  // Traffic went on after the kill: the system kept working rather than finishing before it.
  expect(gapsAfter.length).toBeGreaterThan(messagesTotal / 2);
});
