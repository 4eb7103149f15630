// Shared vocabulary of the benchmark harness. Kept free of runtime code so
// every module can import it without pulling in undici, autocannon, etc.

export type RegistryName = 'ferry' | 'reference';

/** Which direction is "good" for a metric; decides how the ratio is oriented. */
export type Better = 'higher' | 'lower';

export interface MetricDef {
  /** Stable identifier used in the JSON file and for target lookup. */
  id: string;
  /** Human label for the table ("manifest GET by tag, 32 conn"). */
  label: string;
  unit: string;
  better: Better;
}

/** One measured run of one case against one registry: metric id -> value. */
export type Sample = Record<string, number>;
