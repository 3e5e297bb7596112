// `cellwire cells` and `cellwire whereis`: what the directory says, asked over NATS like any service does.
import { connect } from "@nats-io/transport-node";
import { anonymousNatsAccess, DirectoryClient, natsConnectOptions, UnavailableError, type NatsAccess } from "@cellwire/cluster";
import { isUserId } from "@cellwire/protocol";

export type DirectoryCommandOptions = {
  readonly natsServers: readonly string[];
  readonly natsAccess?: NatsAccess;
  readonly namespace: string;
  readonly json: boolean;
};

const directoryTimeoutMs = 5000;

async function withDirectory(options: DirectoryCommandOptions, work: (directory: DirectoryClient) => Promise<number>): Promise<number> {
  const connection = await connect({
    ...(await natsConnectOptions(options.natsAccess ?? anonymousNatsAccess("admin"))),
    servers: [...options.natsServers],
    name: "cellwire-cli",
  });
  try {
    return await work(new DirectoryClient(connection, options.namespace, directoryTimeoutMs));
  } catch (error) {
    if (!(error instanceof UnavailableError)) throw error;
    process.stderr.write(`cellwire: the directory of namespace ${options.namespace} did not answer (is the topology running?)\n`);
    return 1;
  } finally {
    await connection.close();
  }
}

/** Lists the registered cells with their weight and state. */
export function runCells(options: DirectoryCommandOptions): Promise<number> {
  return withDirectory(options, async (directory) => {
    const cells = [...(await directory.listCells())].sort((left, right) => (left.cellId < right.cellId ? -1 : 1));
    if (options.json) {
      process.stdout.write(`${JSON.stringify({ namespace: options.namespace, cells })}\n`);
      return 0;
    }
    const total = cells.reduce((sum, cell) => sum + cell.weight, 0);
    process.stdout.write(
      `${cells.length} cells in namespace ${options.namespace}\n${"cell".padEnd(10)}${"weight".padStart(8)}${"share".padStart(9)}  state\n`,
    );
    for (const cell of cells) {
      const share = total === 0 ? 0 : (cell.weight / total) * 100;
      process.stdout.write(
        `${cell.cellId.padEnd(10)}${String(cell.weight).padStart(8)}${`${share.toFixed(1)}%`.padStart(9)}  ${cell.state}\n`,
      );
    }
    return 0;
  });
}

/** Shows a user's home cell and entry epoch; exit 1 for a user the directory has never placed. */
export function runWhereis(userId: string, options: DirectoryCommandOptions): Promise<number> {
  if (!isUserId(userId)) {
    process.stderr.write(`cellwire: ${JSON.stringify(userId)} is not a user id\n`);
    return Promise.resolve(2);
  }
  return withDirectory(options, async (directory) => {
    const entry = await directory.lookupUser(userId);
    if (entry === undefined) {
      if (options.json) process.stdout.write(`${JSON.stringify({ userId, placed: false })}\n`);
      else process.stderr.write(`cellwire: ${userId} has no home cell yet (placed at first connection)\n`);
      return 1;
    }
    if (options.json) process.stdout.write(`${JSON.stringify({ userId, placed: true, cellId: entry.cellId, epoch: entry.epoch })}\n`);
    else process.stdout.write(`${userId} lives in cell ${entry.cellId} (entry epoch ${entry.epoch})\n`);
    return 0;
  });
}
