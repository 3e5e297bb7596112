// @cellwire/edge: the WebSocket front door.
export { startEdge, type RunningEdge } from "./edge.ts";
export { loadEdgeConfig, type EdgeConfig } from "./config.ts";
// The edge's metrics, for a check of what a deployment's dashboards and alerts name (cli/test/deployment-map.ts).
export { EdgeMetrics } from "./edge-metrics.ts";
export { signDevToken, ensureDevKeyPair, devIssuer, devAudience, defaultDevKeyDirectory } from "./auth/dev-keys.ts";
// The edge's token verifier, for the cost per algorithm (cli/src/bench/token-verify.ts).
export { createTokenVerifier } from "./auth/token-verifier.ts";
