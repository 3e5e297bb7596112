// The seeded simulation of a cell's membership, ownership and fencing (see docs/architecture.md,
// "Simulation"): scripts/sim.ts and the tests run it.
export {
  defaultSimulationSettings,
  defaultSteps,
  runSimulation,
  type LivenessResult,
  type SimulationOptions,
  type SimulationResult,
} from "./simulation.ts";
export type { Violation, ViolationKind } from "./safety-checker.ts";
export type { SimulationSettings } from "./world.ts";
