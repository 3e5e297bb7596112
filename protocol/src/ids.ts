// Every id that reaches a NATS subject, a Redis key, a database name or SQL is checked against one of these
// allowlists first. None admits '.', '*', '>' or whitespace, so an id can never widen a NATS subscription
// (a user id like `victim.>` is refused) nor split a Redis key.
import { string, type Decoder } from "./decode.ts";

/** User ids (the JWT `sub`) and device ids. */
export const userIdPattern = /^[A-Za-z0-9_-]{1,64}$/;
export const deviceIdPattern = /^[A-Za-z0-9_-]{1,64}$/;
/** Conversation ids: `d-` (direct, derived from the pair) or `g-` (group, random), then 22 base64url characters. */
export const conversationIdPattern = /^[dg]-[A-Za-z0-9_-]{22}$/;
/** Client message ids: chosen by the client, unique per sender; UUIDs fit. */
export const clientMessageIdPattern = /^[A-Za-z0-9_-]{1,64}$/;
/** Cell ids appear in database names, so they are lower case. */
export const cellIdPattern = /^[a-z][a-z0-9]{0,15}$/;
export const workerIdPattern = /^[a-z0-9][a-z0-9-]{0,47}$/;
/**
 * A mailbox's incarnation (docs/decisions/0021): the cells make it a UUID, clients store and send it back
 * as an opaque string.
 */
export const mailboxIncarnationPattern = /^[A-Za-z0-9_-]{1,64}$/;
/** A deployment's namespace prefixes every subject, bucket, Redis key and database: tests use unique ones. */
export const namespacePattern = /^[a-z][a-z0-9_]{0,23}$/;

export const userId: Decoder<string> = string({ minLength: 1, maxLength: 64, pattern: userIdPattern });
export const deviceId: Decoder<string> = string({ minLength: 1, maxLength: 64, pattern: deviceIdPattern });
export const conversationId: Decoder<string> = string({ minLength: 24, maxLength: 24, pattern: conversationIdPattern });
export const clientMessageId: Decoder<string> = string({ minLength: 1, maxLength: 64, pattern: clientMessageIdPattern });
export const cellId: Decoder<string> = string({ minLength: 1, maxLength: 16, pattern: cellIdPattern });
export const workerId: Decoder<string> = string({ minLength: 1, maxLength: 48, pattern: workerIdPattern });
export const mailboxIncarnation: Decoder<string> = string({ minLength: 1, maxLength: 64, pattern: mailboxIncarnationPattern });
export const messageId: Decoder<string> = string({ minLength: 1, maxLength: 64, pattern: /^[A-Za-z0-9_-]{1,64}$/ });

export function isUserId(value: string): boolean {
  return userIdPattern.test(value);
}
export function isDeviceId(value: string): boolean {
  return deviceIdPattern.test(value);
}
export function isConversationId(value: string): boolean {
  return conversationIdPattern.test(value);
}
export function isCellId(value: string): boolean {
  return cellIdPattern.test(value);
}
export function isWorkerId(value: string): boolean {
  return workerIdPattern.test(value);
}
export function isNamespace(value: string): boolean {
  return namespacePattern.test(value);
}
