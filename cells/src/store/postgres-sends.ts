// Group commit of sends on Postgres: many sends, to many conversations, stored by ONE statement (one round
// trip, one implicit transaction, one commit). docs/decisions/0009 and docs/performance.md say why; the
// per-send rules are ConversationStore.appendMessage's and stay the same:
//
// - A repeated (conversation, sender, clientMessageId) answers its stored message and writes nothing
//   (unless the conversation is importing: then it is refused as moving, as every request is); the
//   caller compares its body with the send's (a reused id with another body is refused).
// - A new message needs the sender to be a member, and the conversation to be active and not written
//   under a later epoch: the UPDATE of the conversation's head checks both, and Postgres re-checks them on
//   the newest row version once it holds the lock (so a freeze or a newer owner that committed while this
//   statement waited wins). Sends to one conversation take consecutive seqs in input order.
// - The members are those of the statement's snapshot; the row lock hands out `members_version` with the
//   seqs, so whoever publishes the messages knows which member list they were stored for.
//
// A concurrent duplicate of one of the sends (two owners during a handover) or a deadlock between two
// such owners fails the whole statement; the caller's retry then finds the duplicate stored.
import { randomUUID } from "node:crypto";
import type { Pool } from "pg";
import type { Message } from "@cellwire/protocol";
import { StoreRowError } from "./errors.ts";
import type { AppendMessageInput } from "./store.ts";

/**
 * Session settings of the connections that run the send statement (pg's `options`). The statement is
 * prepared once per connection and must keep its index-driven generic plan: with custom plans Postgres
 * re-planned it at every execution (3 ms for 64 sends), and as the conversations' rows collect dead
 * versions between autovacuum runs (every send updates its conversation's head) a sequential scan of them
 * took over, growing with the churn (measured: 0.56 → 1.3 ms of backend CPU per send over 20,000 sends,
 * 0.05 ms with these settings; docs/performance.md). Every table the statement touches is reached by key.
 * Its steps join each other's results, whose sizes the generic plan cannot know (it assumes one row):
 * nested loops made a batch quadratic (45 µs per send at 16 sends, 105 at 256); hash joins keep it flat
 * (43-50 µs). The LATERAL probes stay nested loops, the only way to run them.
 */
export const sendSessionOptions = "-c plan_cache_mode=force_generic_plan -c enable_seqscan=off -c enable_nestloop=off";

/** A row the batch statement returned: a new or an existing message, by the input's position. */
export type SentRow = {
  readonly index: number;
  readonly message: Message;
  readonly deduplicated: boolean;
  readonly membersVersion: number;
};

/**
 * Stores the sends that can be stored and returns their rows; an input without a row was refused (not a
 * member, fenced, migrating): the caller reads the conversation's row to say which.
 */
export async function storeSends(
  pool: Pool,
  inputs: readonly AppendMessageInput[],
  decodeMessage: (row: Record<string, unknown>) => Message,
): Promise<SentRow[]> {
  const first = inputs[0];
  if (first === undefined) return [];
  const epoch = first.epoch;
  if (inputs.some((input) => input.epoch !== epoch)) throw new RangeError("the sends of one batch must share one epoch");
  // Parameters as arrays: one statement whatever the batch size, so Postgres plans it once per shape.
  const positions = inputs.map((_, index) => index);
  const conversationIds = inputs.map((input) => input.conversationId);
  const senderUserIds = inputs.map((input) => input.senderUserId);
  const senderDeviceIds = inputs.map((input) => input.senderDeviceId);
  const clientMessageIds = inputs.map((input) => input.clientMessageId);
  const bodies = inputs.map((input) => input.body);
  const messageIds = inputs.map(() => randomUUID());
  // A named statement is parsed and planned once per connection, not once per batch.
  const result = await pool.query<Record<string, unknown>>({
    name: "cellwire-store-sends",
    text: storeSendsStatement,
    values: [
      positions,
      conversationIds,
      senderUserIds,
      senderDeviceIds,
      clientMessageIds,
      bodies,
      messageIds,
      epoch,
      [...new Set(conversationIds)],
    ],
  });
  return result.rows.map((row): SentRow => {
    const index = row["position"];
    const deduplicated = row["deduplicated"];
    if (typeof index !== "number" || !Number.isInteger(index) || index < 0 || index >= inputs.length) {
      throw new StoreRowError("send batch row: position is not an input's");
    }
    if (typeof deduplicated !== "boolean") throw new StoreRowError("send batch row: deduplicated must be a boolean");
    const membersVersion = Number(row["members_version"]);
    if (!Number.isSafeInteger(membersVersion)) throw new StoreRowError("send batch row: members_version is not a safe integer");
    return { index, message: decodeMessage(row), deduplicated, membersVersion };
  });
}

// Written so that every table is reached through its index whatever the planner's estimates: the batch's
// conversations by `id = any($9)` (their distinct ids), each sender's membership and each dedupe key by a
// LATERAL probe with LIMIT 1 (which the planner cannot turn into a scan of the whole table). With the
// generic plan of a prepared statement and young statistics, joins let it scan conversations and
// members in full for every batch (measured: 2-8 ms for 9 sends on 500 conversations).
export const storeSendsStatement = `
    with input as (
      select * from unnest($1::integer[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[])
        as input(position, conversation_id, sender_user_id, sender_device_id, client_message_id, body, message_id)
    ),
    heads as materialized (
      select id, state, owner_epoch from conversations where id = any($9::text[])
    ),
    existing as (
      select input.position, found.conversation_id, found.seq, found.message_id, found.sender_user_id,
             found.sender_device_id, found.client_message_id, found.body, found.sent_at
      from input
      cross join lateral (
        select * from messages
        where messages.conversation_id = input.conversation_id
          and messages.sender_user_id = input.sender_user_id
          and messages.client_message_id = input.client_message_id
        limit 1
      ) found
      where not exists (select 1 from heads where heads.id = input.conversation_id and heads.state = 'importing')
    ),
    candidates as (
      select input.* from input
      cross join lateral (
        select 1 from conversation_members
        where conversation_members.conversation_id = input.conversation_id and conversation_members.user_id = input.sender_user_id
        limit 1
      ) member
      where not exists (select 1 from existing where existing.position = input.position)
    ),
    counted as (
      select conversation_id, count(*) as sends from candidates group by conversation_id
    ),
    advanced as (
      update conversations set last_seq = conversations.last_seq + counted.sends, owner_epoch = $8::bigint
      from counted
      where conversations.id = any($9::text[])
        and conversations.id = counted.conversation_id
        and conversations.owner_epoch <= $8::bigint
        and conversations.state = 'active'
      returning conversations.id, conversations.last_seq, conversations.members_version
    ),
    numbered as (
      select candidates.*, advanced.members_version,
             advanced.last_seq - counted.sends + row_number() over (partition by candidates.conversation_id order by candidates.position) as seq
      from candidates
      join advanced on advanced.id = candidates.conversation_id
      join counted on counted.conversation_id = candidates.conversation_id
    ),
    inserted as (
      insert into messages (conversation_id, seq, message_id, sender_user_id, sender_device_id, client_message_id, body)
      select conversation_id, seq, message_id, sender_user_id, sender_device_id, client_message_id, body from numbered
      returning conversation_id, seq, sent_at
    )
    select numbered.position, numbered.conversation_id, numbered.seq, numbered.message_id, numbered.sender_user_id,
           numbered.sender_device_id, numbered.client_message_id, numbered.body,
           floor(extract(epoch from inserted.sent_at) * 1000)::bigint as sent_at_ms,
           false as deduplicated, numbered.members_version
    from numbered join inserted on inserted.conversation_id = numbered.conversation_id and inserted.seq = numbered.seq
    union all
    select existing.position, existing.conversation_id, existing.seq, existing.message_id, existing.sender_user_id,
           existing.sender_device_id, existing.client_message_id, existing.body,
           floor(extract(epoch from existing.sent_at) * 1000)::bigint as sent_at_ms,
           true as deduplicated, 0::bigint as members_version
    from existing
`;
