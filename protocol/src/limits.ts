// Hard limits of the wire format. Services may configure lower limits; they never accept more than these.
export const protocolVersion = 1;

/** Largest text frame an edge accepts; uWebSockets.js closes the socket with 1009 above it. */
export const frameBytesMax = 96 * 1024;
/** Largest message body, in UTF-16 code units (JavaScript string length). */
export const messageBodyLengthMax = 32 * 1024;
export const groupTitleLengthMax = 200;
/** Members of one group conversation, creator included. */
export const groupMembersMax = 1000;
/** Users added by one addMembers frame. */
export const addMembersBatchMax = 100;
export const historyPageLimitMax = 200;
export const historyPageLimitDefault = 50;
export const requestIdLengthMax = 64;
export const tokenLengthMax = 8192;
