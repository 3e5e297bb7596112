// A small decoder kit, so that every boundary turns `unknown` into a type or a typed failure without a
// runtime dependency (this package is imported by browsers too).

export type DecodeFailure = { readonly path: string; readonly reason: string };
export type DecodeResult<T> = { readonly ok: true; readonly value: T } | { readonly ok: false; readonly failure: DecodeFailure };
export type Decoder<T> = (input: unknown, path: string) => DecodeResult<T>;
export type Decoded<D> = D extends Decoder<infer T> ? T : never;

export function success<T>(value: T): DecodeResult<T> {
  return { ok: true, value };
}

export function failure<T>(path: string, reason: string): DecodeResult<T> {
  return { ok: false, failure: { path, reason } };
}

export function decode<T>(decoder: Decoder<T>, input: unknown): DecodeResult<T> {
  return decoder(input, "$");
}

export type StringRule = { readonly minLength?: number; readonly maxLength: number; readonly pattern?: RegExp };

export function string(rule: StringRule): Decoder<string> {
  const minLength = rule.minLength ?? 0;
  return (input, path) => {
    if (typeof input !== "string") return failure(path, "must be a string");
    if (input.length < minLength) return failure(path, `must have at least ${minLength} characters`);
    if (input.length > rule.maxLength) return failure(path, `must have at most ${rule.maxLength} characters`);
    if (rule.pattern !== undefined && !rule.pattern.test(input)) return failure(path, `must match ${rule.pattern.source}`);
    return success(input);
  };
}

/**
 * Text that a person wrote (message bodies, titles): refuses NUL, which Postgres cannot store, and
 * unpaired surrogates, which would be silently replaced on the way to UTF-8.
 */
export function text(rule: StringRule): Decoder<string> {
  const base = string(rule);
  return (input, path) => {
    const result = base(input, path);
    if (!result.ok) return result;
    if (result.value.includes("\u0000")) return failure(path, "must not contain NUL characters");
    if (!isWellFormedText(result.value)) return failure(path, "must be well-formed UTF-16 (no lone surrogates)");
    return result;
  };
}

function isWellFormedText(value: string): boolean {
  const native = (value as { isWellFormed?: () => boolean }).isWellFormed;
  if (typeof native === "function") return native.call(value);
  return !/[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/.test(value);
}

export type IntegerRule = { readonly min: number; readonly max: number };

export function integer(rule: IntegerRule): Decoder<number> {
  return (input, path) => {
    if (typeof input !== "number" || !Number.isSafeInteger(input)) return failure(path, "must be an integer");
    if (input < rule.min || input > rule.max) return failure(path, `must be between ${rule.min} and ${rule.max}`);
    // JSON's -0 is an integer to isSafeInteger; read it as 0 so no -0 travels on (Object.is(-0, 0) is false).
    return success(input === 0 ? 0 : input);
  };
}

export const boolean: Decoder<boolean> = (input, path) =>
  typeof input === "boolean" ? success(input) : failure(path, "must be a boolean");

export function literal<const T extends string | number | boolean>(expected: T): Decoder<T> {
  return (input, path) => (input === expected ? success(expected) : failure(path, `must be ${JSON.stringify(expected)}`));
}

export function oneOf<const T extends string>(values: readonly T[]): Decoder<T> {
  const allowed = new Set<string>(values);
  return (input, path) =>
    typeof input === "string" && allowed.has(input) ? success(input as T) : failure(path, `must be one of ${values.join(", ")}`);
}

export function nullable<T>(inner: Decoder<T>): Decoder<T | null> {
  return (input, path) => (input === null ? success(null) : inner(input, path));
}

/** A field that may be absent (or undefined); absent fields decode to undefined. */
export function optional<T>(inner: Decoder<T>): Decoder<T | undefined> & { readonly optionalField: true } {
  const decoder = (input: unknown, path: string): DecodeResult<T | undefined> =>
    input === undefined ? success(undefined) : inner(input, path);
  return Object.assign(decoder, { optionalField: true as const });
}

export type ArrayRule = { readonly maxItems: number; readonly minItems?: number; readonly unique?: boolean };

export function array<T>(item: Decoder<T>, rule: ArrayRule): Decoder<T[]> {
  const minItems = rule.minItems ?? 0;
  return (input, path) => {
    if (!Array.isArray(input)) return failure(path, "must be an array");
    if (input.length > rule.maxItems) return failure(path, `must have at most ${rule.maxItems} items`);
    if (input.length < minItems) return failure(path, `must have at least ${minItems} items`);
    const values: T[] = [];
    for (let index = 0; index < input.length; index++) {
      const result = item(input[index], `${path}[${index}]`);
      if (!result.ok) return result;
      values.push(result.value);
    }
    if (rule.unique === true && new Set(values).size !== values.length) return failure(path, "must not repeat items");
    return success(values);
  };
}

type Shape = Record<string, Decoder<unknown>>;
type RequiredKeys<S extends Shape> = { [K in keyof S]: S[K] extends { optionalField: true } ? never : K }[keyof S];
type OptionalKeys<S extends Shape> = { [K in keyof S]: S[K] extends { optionalField: true } ? K : never }[keyof S];
export type ObjectOf<S extends Shape> = { [K in RequiredKeys<S>]: Decoded<S[K]> } & { [K in OptionalKeys<S>]?: Decoded<S[K]> };

export function isRecord(input: unknown): input is Record<string, unknown> {
  return typeof input === "object" && input !== null && !Array.isArray(input);
}

/**
 * Decodes a plain object with exactly the given fields. Unknown fields are rejected, so a typo in a client
 * frame is reported rather than silently ignored.
 */
/**
 * `unknownFields`: "refuse" (the default: a field the shape does not name fails the decode, which is how
 * servers read what clients send) or "ignore" (it is dropped, which is how clients read what servers
 * send, so that a field added later does not break them: docs/decisions/0010-protocol-evolution.md).
 */
export type ObjectRule = { readonly unknownFields: "refuse" | "ignore" };

export function object<S extends Shape>(shape: S, rule: ObjectRule = { unknownFields: "refuse" }): Decoder<ObjectOf<S>> {
  const keys = Object.keys(shape);
  const known = new Set(keys);
  const refuseUnknown = rule.unknownFields === "refuse";
  return (input, path) => {
    if (!isRecord(input)) return failure(path, "must be an object");
    if (refuseUnknown) {
      for (const key in input) {
        if (!known.has(key)) return failure(`${path}.${key}`, "is not a known field");
      }
    }
    const output: Record<string, unknown> = {};
    for (const key of keys) {
      const field = shape[key];
      if (field === undefined) continue;
      const result = field(input[key], `${path}.${key}`);
      if (!result.ok) return result;
      if (result.value !== undefined) output[key] = result.value;
    }
    return success(output as ObjectOf<S>);
  };
}

/**
 * Decodes a union discriminated by its `type` field: the decoder of the named variant does the rest, so a
 * failure names the field that is wrong rather than every variant that did not match.
 */
export function taggedUnion<T extends { type: string }>(variants: {
  readonly [K in T["type"]]: Decoder<Extract<T, { type: K }>>;
}): Decoder<T> {
  const table = variants as Readonly<Record<string, Decoder<T>>>;
  return (input, path) => {
    if (!isRecord(input)) return failure(path, "must be an object");
    const type = input["type"];
    if (typeof type !== "string") return failure(`${path}.type`, "must be a string");
    const variant = Object.prototype.hasOwnProperty.call(table, type) ? table[type] : undefined;
    if (variant === undefined) return failure(`${path}.type`, `unknown type ${JSON.stringify(type.slice(0, 64))}`);
    return variant(input, path);
  };
}

/** A decoder that also requires `check` of the decoded value; `reason` names what failed. */
export function refine<T>(inner: Decoder<T>, check: (value: T) => boolean, reason: string): Decoder<T> {
  return (input, path) => {
    const result = inner(input, path);
    if (!result.ok || check(result.value)) return result;
    return failure(path, reason);
  };
}

/** Parses JSON text without throwing; returns undefined-free results. */
export function parseJson(text: string): DecodeResult<unknown> {
  try {
    return success(JSON.parse(text) as unknown);
  } catch {
    return failure("$", "is not valid JSON");
  }
}
