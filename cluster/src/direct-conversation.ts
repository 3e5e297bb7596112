import { createHmac } from "node:crypto";

/**
 * The secret a deployment's direct conversation ids are derived with (CELLWIRE_DIRECT_CONVERSATION_KEY,
 * the same on every edge and worker). Keyed, so that nobody without it can compute the id of two other
 * users' direct conversation and probe whether they talk (issue 10): ids of groups are random, and now
 * those of direct conversations are as unguessable to outsiders.
 */
export const directConversationKeyLengthMin = 32;

/**
 * The key of dev deployments (EDGE_AUTH_MODE=dev and workers without the variable). It is public, so it
 * protects nothing: an edge in jwks mode refuses to start with it.
 */
export const devDirectConversationKey = "cellwire-dev-direct-conversation-key: public, for dev only";

/**
 * The id of the direct conversation between two users, derived from the pair and the deployment's key so
 * that two edges racing to open it for the same pair name the same conversation: `d-` and 22 base64url
 * characters (132 bits) of HMAC-SHA-256.
 */
export function directConversationId(key: string, userA: string, userB: string): string {
  if (key.length < directConversationKeyLengthMin)
    throw new RangeError(`a direct conversation key has at least ${directConversationKeyLengthMin} characters`);
  const [first, second] = userA < userB ? [userA, userB] : [userB, userA];
  const digest = createHmac("sha256", key).update(`${first}\n${second}`).digest("base64url");
  return `d-${digest.slice(0, 22)}`;
}

/**
 * The id of the group a user creates under a clientGroupId, derived like a direct conversation's (same
 * key, `group` line first so that no pair of users derives it), so that a retried createGroup names the
 * same group, on any edge, without anything remembered: `g-` and 22 base64url characters of HMAC-SHA-256.
 * docs/decisions/0017 says why this and not a key remembered by the cell.
 */
export function keyedGroupConversationId(key: string, creatorUserId: string, clientGroupId: string): string {
  if (key.length < directConversationKeyLengthMin)
    throw new RangeError(`a direct conversation key has at least ${directConversationKeyLengthMin} characters`);
  const digest = createHmac("sha256", key).update(`group\n${creatorUserId}\n${clientGroupId}`).digest("base64url");
  return `g-${digest.slice(0, 22)}`;
}
