// Statement latency by store method (cellwire_worker_statement_seconds{statement}): a view of the store
// whose every method records how long its promise took, the label bound once per method. The store's
// methods are the closed set of statements (appendMessages is the group commit's; freeze, importPage,
// exportMessages and tombstone are migration's steps). Calls a method makes to another inside the store
// are not counted twice: the store runs them on itself.
import type { PlainHistogram } from "@cellwire/cluster";

/** "appendMessages" -> "append_messages". */
export function statementLabel(methodName: string): string {
  return methodName.replace(/[A-Z]/g, (letter) => `_${letter.toLowerCase()}`);
}

/** The names of `target`'s methods, from its class chain (the constructor and Object's own left out). */
function methodNames(target: object): string[] {
  const names = new Set<string>();
  for (let prototype: object | null = Object.getPrototypeOf(target); prototype !== null && prototype !== Object.prototype;) {
    for (const name of Object.getOwnPropertyNames(prototype)) {
      if (name === "constructor") continue;
      const descriptor = Object.getOwnPropertyDescriptor(prototype, name);
      if (descriptor !== undefined && typeof descriptor.value === "function") names.add(name);
    }
    prototype = Object.getPrototypeOf(prototype);
  }
  return [...names];
}

/**
 * `store` with each method timed into `histogram`; anything else (fields, getters) reads through to the
 * store. A method whose result is not a promise is passed through untimed.
 */
export function timeStatements<T extends object>(store: T, histogram: Pick<PlainHistogram, "cell">): T {
  const timed: Record<string, unknown> = Object.create(store) as Record<string, unknown>;
  const methods = store as unknown as Record<string, (...args: unknown[]) => unknown>;
  for (const name of methodNames(store)) {
    const method = methods[name];
    if (method === undefined) continue;
    const child = histogram.cell(statementLabel(name));
    timed[name] = (...args: unknown[]): unknown => {
      const startedAtMs = performance.now();
      const result = method.apply(store, args);
      if (!(result instanceof Promise)) return result;
      const observe = (): void => child.observe((performance.now() - startedAtMs) / 1000);
      return result.then(
        (value: unknown) => {
          observe();
          return value;
        },
        (error: unknown) => {
          observe();
          throw error;
        },
      );
    };
  }
  return timed as T;
}
