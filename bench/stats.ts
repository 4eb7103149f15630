// Small order statistics; inputs are tiny (repeats) or sorted once (latencies).

export function sorted(values: readonly number[]): number[] {
  return [...values].sort((a, b) => a - b);
}

/** Quantile with linear interpolation between closest ranks (q in [0, 1]). */
export function quantileSorted(s: readonly number[], q: number): number {
  if (s.length === 0) return Number.NaN;
  const pos = (s.length - 1) * q;
  const lo = Math.floor(pos);
  const hi = Math.ceil(pos);
  return s[lo] + (s[hi] - s[lo]) * (pos - lo);
}

export function quantile(values: readonly number[], q: number): number {
  return quantileSorted(sorted(values), q);
}

export function median(values: readonly number[]): number {
  return quantile(values, 0.5);
}

export interface Summary {
  samples: number[];
  median: number;
  min: number;
  max: number;
  /** Interquartile range; only meaningful with 4+ samples, reported anyway in JSON. */
  q1: number;
  q3: number;
}

export function summarize(samples: readonly number[]): Summary {
  const s = sorted(samples);
  return {
    samples: [...samples],
    median: quantileSorted(s, 0.5),
    min: s[0],
    max: s[s.length - 1],
    q1: quantileSorted(s, 0.25),
    q3: quantileSorted(s, 0.75),
  };
}

/** Growable latency recorder (milliseconds) that avoids per-sample allocation. */
export class LatencyRecorder {
  private buf = new Float64Array(1024);
  private n = 0;

  record(ms: number): void {
    if (this.n === this.buf.length) {
      const bigger = new Float64Array(this.buf.length * 2);
      bigger.set(this.buf);
      this.buf = bigger;
    }
    this.buf[this.n++] = ms;
  }

  get count(): number {
    return this.n;
  }

  /** p in [0, 1]; NaN when nothing was recorded. */
  percentiles(...ps: number[]): number[] {
    const s = Array.from(this.buf.subarray(0, this.n)).sort((a, b) => a - b);
    return ps.map((p) => quantileSorted(s, p));
  }
}
