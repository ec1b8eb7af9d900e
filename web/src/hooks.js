// SPDX-License-Identifier: MIT
// Loading API data into a page, optionally polling while the page is shown.
import { useCallback, useEffect, useRef, useState } from 'preact/hooks';

export function useLoad(fn, deps, intervalMs = 0) {
  const [state, setState] = useState({ data: null, error: null, loading: true });
  const alive = useRef(true);
  const load = useCallback(async () => {
    try {
      const data = await fn();
      if (alive.current) setState({ data, error: null, loading: false });
    } catch (error) {
      if (alive.current) setState((s) => ({ data: s.data, error, loading: false }));
    }
  }, deps);
  useEffect(() => {
    alive.current = true;
    load();
    let t = null;
    if (intervalMs > 0) t = setInterval(load, intervalMs);
    return () => { alive.current = false; if (t) clearInterval(t); };
  }, [load, intervalMs]);
  return { ...state, reload: load };
}
