import { createHash } from "node:crypto";

/**
 * The id of the direct conversation between two users, derived from the pair so that two edges racing
 * to open it for the same pair name the same conversation: `d-` and 22 base64url characters (132 bits).
 */
export function directConversationId(userA: string, userB: string): string {
  const [first, second] = userA < userB ? [userA, userB] : [userB, userA];
  const digest = createHash("sha256").update(`${first}\n${second}`).digest("base64url");
  return `d-${digest.slice(0, 22)}`;
}
