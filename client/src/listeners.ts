// Typed listener sets. A throwing listener must not break the client's socket handling, so its error is
// rethrown on a fresh task, where the runtime reports it (as EventTarget does).

export type Unsubscribe = () => void;

export class Listeners<Events extends Record<string, unknown>> {
  private readonly sets = new Map<keyof Events, Set<(payload: never) => void>>();

  on<E extends keyof Events>(event: E, listener: (payload: Events[E]) => void): Unsubscribe {
    let set = this.sets.get(event);
    if (set === undefined) {
      set = new Set();
      this.sets.set(event, set);
    }
    // Wrapped so that adding the same function twice yields two subscriptions, each removable once.
    const entry = (payload: Events[E]): void => listener(payload);
    set.add(entry);
    return () => {
      set.delete(entry);
    };
  }

  emit<E extends keyof Events>(event: E, payload: Events[E]): void {
    const set = this.sets.get(event) as Set<(payload: Events[E]) => void> | undefined;
    if (set === undefined) return;
    for (const listener of [...set]) {
      try {
        listener(payload);
      } catch (error) {
        queueMicrotask(() => {
          throw error;
        });
      }
    }
  }

  count(event: keyof Events): number {
    return this.sets.get(event)?.size ?? 0;
  }
}
