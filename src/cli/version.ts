/** Ferry's version, as `ferry --version` and the start-up line print it (kept in step with package.json by a test). */
export const VERSION = "0.1.0";
