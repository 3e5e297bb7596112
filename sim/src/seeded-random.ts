// The simulation's only source of randomness: xoshiro128** seeded through splitmix32, so one 32-bit seed
// replays one run exactly. Nothing in a simulated run may call Math.random.

function splitmix32(state: number): { readonly value: number; readonly state: number } {
  const next = (state + 0x9e3779b9) >>> 0;
  let mixed = next;
  mixed = Math.imul(mixed ^ (mixed >>> 16), 0x85ebca6b);
  mixed = Math.imul(mixed ^ (mixed >>> 13), 0xc2b2ae35);
  mixed ^= mixed >>> 16;
  return { value: mixed >>> 0, state: next };
}

export class SeededRandom {
  private a: number;
  private b: number;
  private c: number;
  private d: number;

  constructor(readonly seed: number) {
    if (!Number.isInteger(seed) || seed < 0 || seed > 0xffffffff) throw new RangeError(`a seed is an integer in 0..2^32-1, not ${seed}`);
    let state = seed;
    const words: number[] = [];
    for (let index = 0; index < 4; index++) {
      const step = splitmix32(state);
      state = step.state;
      words.push(step.value);
    }
    [this.a, this.b, this.c, this.d] = [words[0] ?? 1, words[1] ?? 2, words[2] ?? 3, words[3] ?? 4];
    // xoshiro's state must not be all zero.
    if ((this.a | this.b | this.c | this.d) === 0) this.a = 1;
  }

  nextUint32(): number {
    const result = Math.imul(rotateLeft(Math.imul(this.b, 5), 7), 9) >>> 0;
    const shifted = this.b << 9;
    this.c ^= this.a;
    this.d ^= this.b;
    this.b ^= this.c;
    this.a ^= this.d;
    this.c ^= shifted;
    this.d = rotateLeft(this.d, 11);
    return result;
  }

  /** Uniform in [0, 1). */
  next(): number {
    return this.nextUint32() / 2 ** 32;
  }

  /** Uniform integer in [minimum, maximum], both included. */
  integer(minimum: number, maximum: number): number {
    if (maximum < minimum) throw new RangeError(`empty range ${minimum}..${maximum}`);
    return minimum + Math.floor(this.next() * (maximum - minimum + 1));
  }

  chance(probability: number): boolean {
    return probability > 0 && this.next() < probability;
  }

  pick<T>(items: readonly T[]): T {
    const item = items[Math.floor(this.next() * items.length)];
    if (item === undefined) throw new RangeError("cannot pick from an empty list");
    return item;
  }
}

function rotateLeft(value: number, bits: number): number {
  return ((value << bits) | (value >>> (32 - bits))) >>> 0;
}
