/**
 * A caller's callback (`onProgress`) that may throw. Called from a timer, a throw would be an
 * uncaught exception that ends the host process; called once the outputs have their final names,
 * it would reject a merge that succeeded. So a guarded callback keeps the first error, calls
 * `cancel` (which stops the job at its next check), and stays silent after that; the job then
 * rejects with that same error at its next checkpoint, before any output gets its final name,
 * and removes its temporary files as for any failure.
 */
export class GuardedCallback<T> {
  failed = false;
  error: unknown;

  constructor(private readonly fn: (value: T) => void, private readonly cancel: () => void) {}

  readonly call = (value: T): void => {
    if (this.failed) return;
    try {
      this.fn(value);
    } catch (e) {
      this.failed = true;
      this.error = e;
      this.cancel();
    }
  };

  /** Throws the callback's error, if it threw. */
  check(): void {
    if (this.failed) throw this.error;
  }
}

/**
 * The caller's signal combined with an internal one (a throwing callback cancels through it).
 * Returns the signal to pass down and the function that cancels it.
 */
export function cancellable(signal: AbortSignal | undefined): { signal: AbortSignal; cancel: () => void } {
  const controller = new AbortController();
  return { signal: signal ? AbortSignal.any([signal, controller.signal]) : controller.signal, cancel: () => controller.abort() };
}
