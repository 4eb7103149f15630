/**
 * Fault injection for the crash tests (test/e2e/crash.test.ts): when the
 * environment names a point, the process kills itself there with SIGKILL, as
 * a power cut or the OOM killer would. The variable deliberately does not
 * start with FERRY_, so the configuration loader never sees it.
 */
const armed = process.env.FERRYTEST_CRASH_POINT ?? "";

export function crashPoint(name: string): void {
  if (armed === name) process.kill(process.pid, "SIGKILL");
}
