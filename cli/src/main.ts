// `cellwire`: the command line of a Cellwire developer. `token`, `send`, `listen`, `history` and `read` talk to an
// edge through the client SDK like any client; `up` runs the local topology (what `npm start` runs).
import { parseArgs, type ParseArgsConfig } from "node:util";
import { EnvironmentReader, readNatsAccess } from "@cellwire/cluster";
import { addCellWorkersMax } from "@cellwire/protocol";
import { isCliCommand } from "./cli-commands.ts";
import { openHttpOperations } from "./admin-api/http-operations.ts";
import { cellWeightMax, deadLettersRowsMax, drainConcurrencyMax } from "./admin-api/routes.ts";
import { runHistory, runListen, runRead, runSend, runToken } from "./client-commands.ts";
import { openNatsOperations } from "./nats-operations.ts";
import {
  runAddCell,
  runCells,
  runDeadLettersList,
  runDeadLettersRedrive,
  runDrain,
  runMigrate,
  runRevoke,
  runRing,
  runWhereis,
  type OperationsTarget,
} from "./operator-commands.ts";
import { runUp } from "./up.ts";

const usage = `cellwire <command> [options]

Commands:
  token <userId> [--device <id>]                  print a dev token (dev-mode edges accept it)
  send --as <user> --to <user> [text]             send a direct message; without text, each stdin line
                                                   is one message, in order; prints each ack as JSON
  send --as <user> --conversation <id> [text]     the same, to a conversation by id (a group)
  listen --as <user> [--since SEQ] [--count N] [--timeout-ms T]
                                                  print each mailbox event and each message as one JSON
                                                   line: with --since SEQ, the events after mailbox seq SEQ
                                                   (0: all) and every conversation from the join point,
                                                   then live ones
  history --as <user> --with <user> [--limit N]   print a direct conversation, oldest first
  read --as <user> --with <user> [--seq N]        mark a direct conversation read up to its message N
                                                   (default: its last); prints the positions as JSON
  read --as <user> --conversation <id> [--seq N]  the same, for a conversation by id (a group)
  ring <cellId> [--json]                          the cell's members, their lease ages and key shares
  cells [--json]                                  the registered cells, their weights and states
  whereis <userId> [--json]                       the user's home cell
  migrate <userId> <cellId> [--json]              move a user's mailbox to another cell, live
  migrate --conversation <id> <cellId> [--json]   move a conversation's home to another cell, live
  drain <cellId> [--concurrency N] [--json]       move every user and conversation out of a cell (it
                                                   gets no new ones), with progress on stderr
  add-cell <cellId> [--workers N] [--weight W] [--json]
                                                  start a new cell's workers in the running local
                                                   topology (npm start) and wait until it takes users
  revoke <userId> [--json]                        close the user's sessions on every edge (4103) and
                                                   refuse their tokens issued until now
  dead-letters list [--cell <id>] [--limit N] [--json]
                                                  outbox rows whose recipient could not be reached (of
                                                   one cell, or every cell; at most N per cell, 1000)
  dead-letters redrive <cellId> <id…>|--all [--json]
                                                  move dead letters back to the cell's outbox to be
                                                   relayed again (each with its recipient's other rows
                                                   of the conversation)
  up [--nats-cluster]                             run the local topology (what npm start runs); with
                                                   --nats-cluster on a 3-node NATS cluster on loopback
  admin-api                                       serve the operator commands over HTTP (ADMIN_HOST,
                                                   ADMIN_PORT, ADMIN_TOKEN; docs/admin-api.md)

Options for ring, cells, whereis, migrate, drain, add-cell, revoke and dead-letters:
  --admin-url <url>  go through the admin API at <url> (or set CELLWIRE_ADMIN_URL), with the token in
                     CELLWIRE_ADMIN_TOKEN; without it they connect to NATS as the admin user
                     (CELLWIRE_NATS_SERVERS, CELLWIRE_NATS_USER, CELLWIRE_NATS_PASSWORD[_FILE])

Options for send, listen, history and read:
  --edge <url>       the edge's WebSocket URL (default ws://127.0.0.1:8080/ws)
  --device <id>      act as this device (default "cli")
  --token <jwt>      use this token instead of signing a dev token (or set CELLWIRE_TOKEN)
`;

const options = {
  as: { type: "string" },
  to: { type: "string" },
  conversation: { type: "string" },
  since: { type: "string" },
  seq: { type: "string" },
  with: { type: "string" },
  device: { type: "string" },
  edge: { type: "string", default: "ws://127.0.0.1:8080/ws" },
  token: { type: "string" },
  count: { type: "string" },
  "timeout-ms": { type: "string" },
  limit: { type: "string" },
  json: { type: "boolean" },
  concurrency: { type: "string" },
  workers: { type: "string" },
  weight: { type: "string" },
  cell: { type: "string" },
  all: { type: "boolean" },
  "nats-cluster": { type: "boolean" },
  "admin-url": { type: "string" },
  help: { type: "boolean", short: "h" },
} satisfies ParseArgsConfig["options"];

export class UsageError extends Error {
  override readonly name = "UsageError";
}

function positiveInteger(name: string, raw: string | undefined, fallback: number | undefined, max?: number): number | undefined {
  if (raw === undefined) return fallback;
  const value = Number(raw);
  if (!Number.isSafeInteger(value) || value < 1) throw new UsageError(`--${name} must be a positive integer`);
  if (max !== undefined && value > max) throw new UsageError(`--${name} must be at most ${max}`);
  return value;
}

const adminUrlPattern = /^https?:\/\/[^\s/?#]+(\/[^\s?#]*)?$/;

function sequenceNumber(name: string, raw: string): number {
  const value = Number(raw);
  if (!Number.isSafeInteger(value) || value < 0) throw new UsageError(`--${name} must be a mailbox seq (an integer ≥ 0)`);
  return value;
}

function deadLetterId(raw: string): number {
  const value = Number(raw);
  if (!/^[0-9]+$/.test(raw) || !Number.isSafeInteger(value) || value < 1)
    throw new UsageError(`${JSON.stringify(raw)} is not a dead letter id (a positive integer)`);
  return value;
}

function required(name: string, value: string | undefined): string {
  if (value === undefined || value === "") throw new UsageError(`--${name} is required`);
  return value;
}

async function main(argv: string[]): Promise<number> {
  const parsed = parseArgs({ args: argv, options, allowPositionals: true, strict: true });
  const [command, ...rest] = parsed.positionals;
  const values = parsed.values;
  if (values.help === true || command === undefined) {
    process.stdout.write(usage);
    return command === undefined && values.help !== true ? 2 : 0;
  }
  const token = values.token ?? process.env["CELLWIRE_TOKEN"];
  // Operator commands go through the admin API when given its URL; otherwise they talk to the services
  // over NATS, in the namespace the topology runs in, as the admin user (CELLWIRE_NATS_USER and a
  // password, docs/decisions/0015).
  const operatorTarget = (): OperationsTarget => {
    const json = values.json === true;
    const adminUrl = values["admin-url"] ?? process.env["CELLWIRE_ADMIN_URL"];
    if (adminUrl !== undefined && adminUrl !== "") {
      if (!adminUrlPattern.test(adminUrl)) throw new UsageError(`--admin-url must be an http:// or https:// URL`);
      const adminToken = process.env["CELLWIRE_ADMIN_TOKEN"];
      if (adminToken === undefined || adminToken === "") throw new UsageError("--admin-url needs the API's token in CELLWIRE_ADMIN_TOKEN");
      return { json, open: () => Promise.resolve(openHttpOperations({ baseUrl: adminUrl, token: adminToken })) };
    }
    const natsOptions = {
      namespace: process.env["CELLWIRE_NAMESPACE"] ?? "cellwire",
      natsServers: (process.env["CELLWIRE_NATS_SERVERS"] ?? "127.0.0.1:4222").split(",").filter((server) => server !== ""),
      natsAccess: readNatsAccess(new EnvironmentReader(process.env, []), "admin"),
    };
    return { json, open: (name) => openNatsOperations(natsOptions, name) };
  };
  const connection = { edgeUrl: values.edge, deviceId: values.device ?? "cli", token };
  if (!isCliCommand(command)) throw new UsageError(`unknown command ${JSON.stringify(command)}`);
  switch (command) {
    case "token": {
      const userId = rest[0];
      if (userId === undefined) throw new UsageError("token needs a user id");
      return runToken(userId, values.device);
    }
    case "send": {
      if ((values.to === undefined) === (values.conversation === undefined))
        throw new UsageError("send needs exactly one of --to and --conversation");
      const target =
        values.conversation === undefined ? { peerUserId: required("to", values.to) } : { conversationId: values.conversation };
      return runSend({ ...connection, userId: required("as", values.as), target, text: rest.length > 0 ? rest.join(" ") : undefined });
    }
    case "listen":
      return runListen({
        ...connection,
        userId: required("as", values.as),
        count: positiveInteger("count", values.count, undefined),
        timeoutMs: positiveInteger("timeout-ms", values["timeout-ms"], undefined),
        sinceSeq: values.since === undefined ? undefined : sequenceNumber("since", values.since),
      });
    case "history":
      return runHistory({
        ...connection,
        userId: required("as", values.as),
        peerUserId: required("with", values.with),
        limit: positiveInteger("limit", values.limit, 50) ?? 50,
      });
    case "read": {
      if ((values.with === undefined) === (values.conversation === undefined))
        throw new UsageError("read needs exactly one of --with and --conversation");
      const target =
        values.conversation === undefined ? { peerUserId: required("with", values.with) } : { conversationId: values.conversation };
      return runRead({ ...connection, userId: required("as", values.as), target, seq: positiveInteger("seq", values.seq, undefined) });
    }
    case "ring": {
      const cellId = rest[0];
      if (cellId === undefined) throw new UsageError("ring needs a cell id");
      return runRing(cellId, operatorTarget());
    }
    case "cells":
      return runCells(operatorTarget());
    case "whereis": {
      const userId = rest[0];
      if (userId === undefined) throw new UsageError("whereis needs a user id");
      return runWhereis(userId, operatorTarget());
    }
    case "migrate": {
      const conversationId = values.conversation;
      const [id, cellId] = conversationId === undefined ? [rest[0], rest[1]] : [conversationId, rest[0]];
      if (id === undefined || cellId === undefined)
        throw new UsageError("migrate needs a user id (or --conversation <id>) and a target cell id");
      return runMigrate(id, cellId, conversationId === undefined ? "user" : "conversation", operatorTarget());
    }
    case "drain": {
      const cellId = rest[0];
      if (cellId === undefined) throw new UsageError("drain needs a cell id");
      return runDrain(cellId, positiveInteger("concurrency", values.concurrency, 8, drainConcurrencyMax) ?? 8, operatorTarget());
    }
    case "add-cell": {
      const cellId = rest[0];
      if (cellId === undefined) throw new UsageError("add-cell needs a cell id");
      const workers = positiveInteger("workers", values.workers, 2) ?? 2;
      if (workers > addCellWorkersMax) throw new UsageError(`--workers must be at most ${addCellWorkersMax}`);
      return runAddCell(cellId, workers, positiveInteger("weight", values.weight, 100, cellWeightMax) ?? 100, operatorTarget());
    }
    case "revoke": {
      const userId = rest[0];
      if (userId === undefined) throw new UsageError("revoke needs a user id");
      return runRevoke(userId, operatorTarget());
    }
    case "dead-letters": {
      const [action, ...args] = rest;
      if (action === "list") {
        if (args.length > 0) throw new UsageError("dead-letters list takes no arguments (--cell <id> names one cell)");
        return runDeadLettersList(values.cell, positiveInteger("limit", values.limit, 1000, deadLettersRowsMax) ?? 1000, operatorTarget());
      }
      if (action === "redrive") {
        const [cellId, ...ids] = args;
        if (cellId === undefined) throw new UsageError("dead-letters redrive needs a cell id");
        if ((values.all === true) === ids.length > 0)
          throw new UsageError("dead-letters redrive needs dead letter ids or --all (not both)");
        return runDeadLettersRedrive(cellId, values.all === true ? "all" : ids.map((id) => deadLetterId(id)), operatorTarget());
      }
      throw new UsageError("dead-letters needs list or redrive");
    }
    case "up":
      return runUp(process.env, { natsCluster: values["nats-cluster"] === true });
    case "admin-api":
      // The service's own entry reads its config and serves until a signal, on which it exits itself.
      await import("./admin-api/main.ts");
      return new Promise<number>(() => {});
  }
}

main(process.argv.slice(2)).then(
  (status) => {
    process.exitCode = status;
  },
  (error: unknown) => {
    if (error instanceof UsageError || (error instanceof TypeError && "code" in error && String(error.code).startsWith("ERR_PARSE_ARGS"))) {
      process.stderr.write(`cellwire: ${error.message}\n\n${usage}`);
      process.exitCode = 2;
      return;
    }
    process.stderr.write(`cellwire: ${error instanceof Error ? error.message : String(error)}\n`);
    process.exitCode = 1;
  },
);
