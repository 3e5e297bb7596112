// The commands `cellwire` has: cli/src/main.ts refuses any other name before its dispatch, and its switch
// has a case for each of these and no default, so the list and the dispatch cannot drift apart (a case
// outside the list does not compile; a name without a case fails the switch's exhaustiveness check).
// compose.yaml's test checks every service that runs the CLI against it.
export const cliCommands = [
  "token",
  "send",
  "listen",
  "history",
  "read",
  "ring",
  "cells",
  "whereis",
  "migrate",
  "drain",
  "add-cell",
  "revoke",
  "dead-letters",
  "up",
  "admin-api",
] as const;

export type CliCommand = (typeof cliCommands)[number];

export function isCliCommand(name: string): name is CliCommand {
  return (cliCommands as readonly string[]).includes(name);
}
