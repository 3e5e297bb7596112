// @cellwire/protocol: every frame, cell message, error code and close code; zero dependencies, so the
// browser SDK, the edge and the cells share one definition of the wire.
export * from "./decode.ts";
export * from "./ids.ts";
export * from "./limits.ts";
export * from "./codes.ts";
export * from "./frames.ts";
export * from "./cell-messages.ts";
export * from "./request-keys.ts";
export * from "./reply-types.ts";
export * from "./subjects.ts";
