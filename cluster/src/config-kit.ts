// Helpers for each service's typed config: a pure function from an environment record to a config value.
// Only a service's main.ts passes process.env in.
import { ConfigError } from "./errors.ts";

export type Environment = Readonly<Record<string, string | undefined>>;

export class EnvironmentReader {
  private readonly used = new Set<string>();
  constructor(
    private readonly environment: Environment,
    private readonly prefixes: readonly string[],
  ) {}

  string(name: string, fallback: string, pattern?: RegExp): string {
    this.used.add(name);
    const raw = this.environment[name];
    const value = raw === undefined || raw === "" ? fallback : raw;
    if (pattern !== undefined && !pattern.test(value))
      throw new ConfigError(`${name}=${JSON.stringify(value)} must match ${pattern.source}`);
    return value;
  }

  optionalString(name: string): string | undefined {
    this.used.add(name);
    const value = this.environment[name];
    return value === undefined || value === "" ? undefined : value;
  }

  integer(name: string, fallback: number, min: number, max: number): number {
    this.used.add(name);
    const raw = this.environment[name];
    if (raw === undefined || raw === "") return fallback;
    const value = /^-?\d+$/.test(raw.trim()) ? Number(raw.trim()) : Number.NaN;
    if (!Number.isSafeInteger(value) || value < min || value > max) {
      throw new ConfigError(`${name}=${JSON.stringify(raw)} must be an integer between ${min} and ${max}`);
    }
    return value;
  }

  boolean(name: string, fallback: boolean): boolean {
    this.used.add(name);
    const raw = this.environment[name];
    if (raw === undefined || raw === "") return fallback;
    if (raw === "true" || raw === "1") return true;
    if (raw === "false" || raw === "0") return false;
    throw new ConfigError(`${name}=${JSON.stringify(raw)} must be true or false`);
  }

  oneOf<const T extends string>(name: string, fallback: T, values: readonly T[]): T {
    this.used.add(name);
    const raw = this.environment[name];
    if (raw === undefined || raw === "") return fallback;
    const match = values.find((value) => value === raw);
    if (match === undefined) throw new ConfigError(`${name}=${JSON.stringify(raw)} must be one of ${values.join(", ")}`);
    return match;
  }

  /** Variables with one of this service's prefixes that no field read: most likely typos. */
  unknownVariables(): string[] {
    return Object.keys(this.environment)
      .filter((name) => this.prefixes.some((prefix) => name.startsWith(prefix)) && !this.used.has(name))
      .sort();
  }
}
