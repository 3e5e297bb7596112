// A Lua script run by its SHA-1 (EVALSHA), loaded on first use and again after a Redis restart or
// SCRIPT FLUSH, which answer NOSCRIPT.
import { createHash } from "node:crypto";
import type { Redis } from "ioredis";

export class LuaScript {
  readonly sha1: string;

  constructor(readonly source: string) {
    this.sha1 = createHash("sha1").update(source).digest("hex");
  }

  /** The script's reply, unknown until decoded by the caller. */
  async run(redis: Redis, keys: readonly string[], args: readonly string[]): Promise<unknown> {
    try {
      return await redis.evalsha(this.sha1, keys.length, ...keys, ...args);
    } catch (error) {
      if (!isNoScript(error)) throw error;
      // EVAL also caches the script, so the next EVALSHA finds it.
      return await redis.eval(this.source, keys.length, ...keys, ...args);
    }
  }
}

function isNoScript(error: unknown): boolean {
  return error instanceof Error && error.name === "ReplyError" && error.message.startsWith("NOSCRIPT");
}
