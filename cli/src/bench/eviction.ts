// What evicting the oldest key of a full, churning Map or Set costs, with a fresh `keys()` iterator per
// eviction (as the services did) and with OldestFirst's kept iterator (as they do now). The workload is a
// worker's stored sends: each new key is remembered (delete and re-insert, the bounded collections' LRU
// move) and the oldest evicted once the collection is past its bound. Prints one JSON line per size and way.
//
//   npx tsx cli/src/bench/eviction.ts [--operations 200000] [--rounds 3]
import { parseArgs } from "node:util";
import { OldestFirst } from "@cellwire/cluster";

const { values } = parseArgs({ options: { operations: { type: "string", default: "200000" }, rounds: { type: "string", default: "3" } } });
const operations = Number(values.operations);
const rounds = Number(values.rounds);
if (!(Number.isInteger(operations) && operations > 0 && Number.isInteger(rounds) && rounds > 0)) {
  throw new Error("--operations and --rounds take positive integers");
}

type Evictor = (keys: Set<string>) => string | undefined;
const ways: Record<string, () => Evictor> = {
  "keys().next()": () => (keys) => keys.keys().next().value,
  OldestFirst: () => {
    let oldest: OldestFirst<string> | undefined;
    return (keys) => (oldest ??= new OldestFirst(keys)).next();
  },
};

/** The key of a send, shaped as a worker's (conversation, sender, clientMessageId). */
function keyOf(index: number): string {
  return `d-conversation${index % 500}\nuser-${index % 1000}\nclient-message-${index}`;
}

function nanosecondsPerOperation(keysMax: number, makeEvictor: () => Evictor): number {
  const keys = new Set<string>();
  const evict = makeEvictor();
  const remember = (key: string): void => {
    keys.delete(key);
    keys.add(key);
    if (keys.size <= keysMax) return;
    const oldest = evict(keys);
    if (oldest !== undefined) keys.delete(oldest);
  };
  let index = 0;
  // Filled past its bound first, so every measured operation evicts.
  for (; index < 2 * keysMax; index++) remember(keyOf(index));
  const startedAt = process.hrtime.bigint();
  for (let operation = 0; operation < operations; operation++, index++) remember(keyOf(index));
  return Number(process.hrtime.bigint() - startedAt) / operations;
}

for (const keysMax of [1_024, 16_384, 65_536]) {
  for (const [way, makeEvictor] of Object.entries(ways)) {
    const figures = Array.from({ length: rounds }, () => Math.round(nanosecondsPerOperation(keysMax, makeEvictor)));
    console.log(JSON.stringify({ keysMax, way, operations, nanosecondsPerOperation: figures }));
  }
}
