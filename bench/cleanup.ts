// Teardown registry: server processes and temporary directories must go away
// on success, on failure and on Ctrl-C alike, so every resource registers its
// own undo step here as soon as it exists.

type Task = () => Promise<void> | void;

const tasks: Task[] = [];
let running: Promise<void> | undefined;
let signalled = false;

/** True once Ctrl-C/SIGTERM arrived: callers stop starting work and skip the report. */
export function interrupted(): boolean {
  return signalled;
}

/** Registers a teardown step; steps run last-registered-first. */
export function onCleanup(task: Task): void {
  tasks.push(task);
}

/** Runs every registered step once, even if some of them throw. */
export function runCleanup(): Promise<void> {
  running ??= (async () => {
    while (tasks.length > 0) {
      const task = tasks.pop();
      try {
        await task?.();
      } catch (err) {
        process.stderr.write(`cleanup step failed: ${String(err)}\n`);
      }
    }
  })();
  return running;
}

/**
 * Ctrl-C / SIGTERM: the servers run in their own process groups (so a
 * terminal's SIGINT does not reach them half-way through a measurement),
 * hence we must stop them ourselves before exiting.
 */
export function installSignalHandlers(): void {
  for (const [signal, code] of [['SIGINT', 130], ['SIGTERM', 143]] as const) {
    process.once(signal, () => {
      signalled = true;
      process.stderr.write(`\n${signal}: stopping servers and removing temporary data...\n`);
      void runCleanup().finally(() => process.exit(code));
    });
  }
}
