// Test support, not shipped (index.ts does not export it): a Postgres server of the test's own, which it
// may crash and start again, as the machine's shared one must never be. A throwaway cluster (initdb) in a
// temporary directory, on a free loopback port, owned by the machine's postgres user (initdb and postgres
// refuse to run as root), driven by pg_ctl as cli/src/bench/private-postgres.ts does.
import { execFile } from "node:child_process";
import { mkdtemp, rm, chown } from "node:fs/promises";
import { createServer, type AddressInfo } from "node:net";
import { tmpdir, userInfo } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";

const run = promisify(execFile);
const loopbackHost = "127.0.0.1";
/** The owner of the cluster when the tests run as root. */
const postgresUser = "postgres";

export class PrivatePostgres {
  private constructor(
    private readonly directory: string,
    readonly port: number,
  ) {}

  /** A URL with the rights to create databases, as WORKER_POSTGRES_ADMIN_URL takes it. */
  get adminUrl(): string {
    return `postgres://postgres@${loopbackHost}:${this.port}/postgres`;
  }

  static async start(): Promise<PrivatePostgres> {
    const directory = await mkdtemp(join(tmpdir(), "cellwire-pg-"));
    if (userInfo().uid === 0) {
      const ids = await Promise.all(["-u", "-g"].map(async (flag) => Number((await run("id", [flag, postgresUser])).stdout.trim())));
      await chown(directory, ids[0] ?? 0, ids[1] ?? 0);
    }
    const port = await freeLoopbackPort();
    const server = new PrivatePostgres(directory, port);
    await server.pgCommand("initdb", ["-D", server.dataDirectory, "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync"]);
    await server.startServer(true);
    return server;
  }

  /**
   * Stops the server as a crash does (pg_ctl's immediate mode: every backend quits at once, no
   * checkpoint): clients see their connections end, the next start runs crash recovery.
   */
  async crash(): Promise<void> {
    await this.pgCommand("pg_ctl", ["stop", "-D", this.dataDirectory, "-m", "immediate"]);
  }

  /** Starts the server again without waiting for it to accept connections: clients meet its start-up. */
  async restart(): Promise<void> {
    await this.startServer(false);
  }

  /** Stops the server and removes its data. Idempotent. */
  async stop(): Promise<void> {
    await this.pgCommand("pg_ctl", ["stop", "-D", this.dataDirectory, "-m", "fast"]).catch(() => undefined);
    await rm(this.directory, { recursive: true, force: true });
  }

  private get dataDirectory(): string {
    return join(this.directory, "data");
  }

  private async startServer(wait: boolean): Promise<void> {
    const options = `-p ${this.port} -k ${this.directory} -c listen_addresses=${loopbackHost} -c fsync=off`;
    await this.pgCommand("pg_ctl", [
      "start",
      "-D",
      this.dataDirectory,
      "-l",
      join(this.directory, "log"),
      "-o",
      options,
      wait ? "-w" : "-W",
    ]);
  }

  private async pgCommand(command: string, args: readonly string[]): Promise<void> {
    const [file, fileArgs] = userInfo().uid === 0 ? ["runuser", ["-u", postgresUser, "--", command, ...args]] : [command, [...args]];
    await run(file, fileArgs, { timeout: 60_000 });
  }
}

/** A port nobody listens on now (Postgres takes no port 0): the one the kernel picks for a listener on 0. */
async function freeLoopbackPort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, loopbackHost, resolve));
  const { port } = server.address() as AddressInfo;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}
