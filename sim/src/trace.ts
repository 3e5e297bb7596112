// The last events of a run, kept in a bounded ring buffer: on a failure the tail shows what led to it.

export class Trace {
  private readonly lines: string[] = [];
  private next = 0;
  private recordedCount = 0;

  constructor(private readonly capacity: number) {}

  record(atMs: number, text: string): void {
    if (this.capacity <= 0) return;
    const line = `${atMs.toString().padStart(7)} ms  ${text}`;
    if (this.lines.length < this.capacity) this.lines.push(line);
    else this.lines[this.next] = line;
    this.next = (this.next + 1) % this.capacity;
    this.recordedCount++;
  }

  get recorded(): number {
    return this.recordedCount;
  }

  /** The last `count` lines, oldest first. */
  tail(count: number): string[] {
    const ordered = this.lines.length < this.capacity ? this.lines : [...this.lines.slice(this.next), ...this.lines.slice(0, this.next)];
    return ordered.slice(Math.max(0, ordered.length - count));
  }
}
