// Hard limits of the wire format. Services may configure lower limits; they never accept more than these.
/**
 * The version a hello names. 2: conversations are read from their logs (docs/decisions/0009); how the
 * protocol evolves without a new version is docs/decisions/0010.
 */
export const protocolVersion = 2;
/** Versions an edge serves; a hello naming another is closed with 4201. */
export const protocolVersionsSupported: readonly number[] = [2];

/** Largest message body, in UTF-16 code units (JavaScript string length). */
export const messageBodyLengthMax = 32 * 1024;
/**
 * Largest text frame an edge accepts; the edge closes the socket with 1009 above it (and uWebSockets.js
 * drops a frame over twice this size without a close frame: 1006). Sized so that
 * a send frame with a body at its limit fits whatever its characters: JSON escapes a control character
 * in six bytes, the worst case per UTF-16 unit.
 */
export const frameBytesMax = 6 * messageBodyLengthMax + 16 * 1024;
/**
 * A history page stops growing at this many bytes of encoded messages (always holding at least one), so
 * a page fits a NATS message (1 MiB by default) and a client's send buffer whatever the bodies' sizes.
 */
export const historyPageBytesMax = 512 * 1024;
export const groupTitleLengthMax = 200;
/** Members of one group conversation, creator included. */
export const groupMembersMax = 1000;
/** Users added by one addMembers frame. */
export const addMembersBatchMax = 100;
export const historyPageLimitMax = 200;
export const historyPageLimitDefault = 50;
export const requestIdLengthMax = 64;
/**
 * Longest `message` of an error frame, in UTF-16 code units: a client's decoder refuses a longer one, so
 * the edge cuts what it writes (a decode failure names the field, and a client chooses field names).
 */
export const errorMessageLengthMax = 1000;
export const tokenLengthMax = 8192;
/** Events in one mailbox page (a resume replays in pages of at most this many). */
export const mailboxPageLimitMax = 200;
/**
 * Conversation cursors one hello carries. A device in more conversations lists its most recently active
 * ones and reads the others through `history` (docs/decisions/0009).
 */
export const resumeConversationsMax = 1000;
/** Messages in one page of a conversation read forward from a cursor (a resume, or a gap in live delivery). */
export const conversationPageLimitMax = 200;
/**
 * Sends an edge carries to one worker in one NATS request, and their encoded size: under NATS's 1 MiB
 * default payload even when every body is at its limit.
 */
export const sendBatchItemsMax = 256;
export const sendBatchBytesMax = 768 * 1024;
/** Items (messages, events, typing indicators) in one delivery.batch; its bytes are bounded by sendBatchBytesMax. */
export const deliveryBatchItemsMax = 1024;
/** The longest retry-after an `overloaded` answer may ask for. */
export const retryAfterMsMax = 60_000;

// Ephemeral features (typing and presence): never stored, bounded on the wire and between edges.
/** How long a receiver may show one typing indicator, unless a newer one refreshes it. */
export const typingExpiresInMsMax = 60_000;
/**
 * Deliveries of one typing frame: one per member of the conversation (the typist included, for their
 * other devices), so at most a group's size.
 */
export const typingFanOutMax = groupMembersMax;
/** Users one watchPresence frame names; each watchPresence replaces the session's watched set. */
export const presenceWatchUsersMax = 100;
/** User ids in one presence heartbeat between edges; an edge with more online users sends several. */
export const presenceHeartbeatUsersMax = 1000;

/**
 * Receipts of a conversation with more members than this reach only the reader's own mailbox (to sync
 * read state across the reader's devices); the other members see positions through `read`/history later.
 * Bounds the mailbox writes one read makes (a read in a 1,000-member group would otherwise write 1,000).
 */
export const receiptFanOutMembersMax = 32;

/** Dead letters one cell.deadLetters page lists (docs/decisions/0022); the CLI pages on by cursor. */
export const deadLettersPageLimitMax = 200;
/** Dead letter ids one cell.redriveDeadLetters names; --all redrives page by page. */
export const redriveIdsMax = 200;
