// @cellwire/cli: the `cellwire` command, and the local topology it runs (`npm start`, the benchmarks, the tests).
export { startTopology, Topology, TopologyStartError, type TopologyOptions, type EdgeAddress, type CellPlan } from "./topology.ts";
export { destroyNamespace, type NamespaceResources } from "./cleanup.ts";
export { servicesToCheck, unreachableServices } from "./preflight.ts";
