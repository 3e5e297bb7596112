// Migration benchmark: the pause of one move with the machine otherwise idle. Runs a real topology (cells
// a and b, two workers each, one edge) on a fresh namespace, gives alice a mailbox and a direct
// conversation of `--messages` messages, then moves the conversation and alice's mailbox from cell to cell
// `--moves` times, one at a time, and prints each kind's pause (freeze to activation, as the moving worker
// measured it) and time to move. `cli/src/migration.integration.test.ts` measures the same under traffic.
//
//   npm run bench:migration -- [--moves 20] [--messages 200]
import { parseArgs } from "node:util";
import { connect } from "@nats-io/transport-node";
import { WebSocket } from "ws";
import { CellwireClient } from "@cellwire/client";
import { defaultDevKeyDirectory, signDevToken } from "@cellwire/edge/dev-keys";
import { migrateKey, migrationTools } from "../migration.ts";
import { percentile } from "../statistics.ts";
import { placeUsers, startTestTopology, testServices } from "../test-topology.ts";

const { values } = parseArgs({ options: { moves: { type: "string", default: "20" }, messages: { type: "string", default: "200" } } });
const moves = Number(values.moves);
const messages = Number(values.messages);
if (![moves, messages].every((value) => Number.isSafeInteger(value) && value > 0))
  throw new Error("--moves and --messages take positive integers");

process.stdout.write(
  `migration bench: ${moves} moves of a ${messages}-message conversation and of a ${messages}-event mailbox; starting the topology…\n`,
);
const test = await startTestTopology({ label: "benchmig", edgeCount: 1 });
const nats = await connect({ servers: [...testServices.natsServers] });
const tools = migrationTools(nats, test.namespace);
const client = new CellwireClient({
  url: test.topology.edges.map((edge) => edge.webSocketUrl),
  deviceId: "bench",
  WebSocket,
  tokenProvider: () => signDevToken(defaultDevKeyDirectory, "alice", { deviceId: "bench" }),
});
try {
  await placeUsers(test, [
    ["alice", "a"],
    ["bob", "b"],
  ]);
  await client.connect();
  const { conversationId } = await client.openDirect("bob");
  for (let index = 0; index < messages; index++) {
    await client.send(conversationId, `message ${index}`);
    if ((index + 1) % 50 === 0) process.stdout.write(`  ${index + 1}/${messages} messages sent\n`);
  }
  const figures = {
    conversation: { pausesMs: [] as number[], tookMs: [] as number[] },
    user: { pausesMs: [] as number[], tookMs: [] as number[] },
  };
  for (let move = 0; move < moves; move++) {
    const target = move % 2 === 0 ? "b" : "a";
    for (const [kind, id] of [
      ["conversation", conversationId],
      ["user", "alice"],
    ] as const) {
      const startedAtMs = performance.now();
      const result = await migrateKey(tools, kind, id, target);
      if (result.alreadyMoved || result.toCellId !== target) throw new Error(`${kind} ${id} did not move to ${target}`);
      figures[kind].pausesMs.push(result.pauseMs);
      figures[kind].tookMs.push(performance.now() - startedAtMs);
    }
    process.stdout.write(
      `  move ${move + 1}/${moves}: conversation paused ${figures.conversation.pausesMs.at(-1)} ms, mailbox ${figures.user.pausesMs.at(-1)} ms\n`,
    );
  }
  const line = (values: number[]): string =>
    `p50 ${Math.round(percentile(values, 50) ?? 0)} ms, p99 ${Math.round(percentile(values, 99) ?? 0)} ms, max ${Math.round(percentile(values, 100) ?? 0)} ms`;
  process.stdout.write(
    [
      `conversation (${messages} messages): pause ${line(figures.conversation.pausesMs)}; whole move ${line(figures.conversation.tookMs)}`,
      `mailbox (${messages} events): pause ${line(figures.user.pausesMs)}; whole move ${line(figures.user.tookMs)}`,
      "",
    ].join("\n"),
  );
} finally {
  client.close();
  tools.stop();
  await nats.close();
  await test.destroy();
}
