// @cellwire/edge: the WebSocket front door.
export { startEdge, type RunningEdge } from "./edge.ts";
export { loadEdgeConfig, type EdgeConfig } from "./config.ts";
export { signDevToken, ensureDevKeyPair, devIssuer, devAudience, defaultDevKeyDirectory } from "./auth/dev-keys.ts";
