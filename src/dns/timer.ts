/** Starts a timer; the returned function cancels it. Injected by tests, so no test waits on the clock. */
export type StartTimer = (fn: () => void, ms: number) => () => void;

export const realTimer: StartTimer = (fn, ms) => {
  const t = setTimeout(fn, ms);
  return () => clearTimeout(t);
};
