// When to try again: full-jitter exponential back-off, and the server's hints.
//
// Full jitter (delay uniform in [0, min(max, initial * 2^attempt)]) spreads a crowd of
// clients that lost the same gateway over the whole window instead of sending them back
// in waves. The server's own hints win when it gives them: `retry_after_ms=N` in the
// reason of a 1001 close (drain), `Retry-After` on an HTTP 503 (over capacity; only
// visible where the WebSocket implementation exposes a failed upgrade's response: the
// `ws` package in Node does, a browser's WebSocket does not, and there the back-off
// applies).

export interface BackoffOptions {
  /** First window, ms (default 1000). */
  initialMs?: number;
  /** Largest window, ms (default 30000). */
  maxMs?: number;
  /** Random source in [0, 1) (default Math.random); tests pin it. */
  random?: () => number;
}

export class Backoff {
  readonly initialMs: number;
  readonly maxMs: number;
  private readonly random: () => number;
  /** Failed attempts since the last stable connection. */
  attempt = 0;

  constructor(o: BackoffOptions = {}) {
    this.initialMs = Math.max(1, o.initialMs ?? 1000);
    this.maxMs = Math.max(this.initialMs, o.maxMs ?? 30000);
    this.random = o.random ?? Math.random;
  }

  /** The window of the current attempt, ms. */
  window(): number {
    // 2^attempt overflows nothing here: the exponent is capped before it matters.
    return Math.min(this.maxMs, this.initialMs * 2 ** Math.min(this.attempt, 30));
  }

  /** The delay before the next attempt (full jitter), and counts the attempt. */
  next(): number {
    const delay = Math.floor(this.random() * this.window());
    this.attempt += 1;
    return delay;
  }

  /** A server hint (ms) plus up to `spreadMs` of jitter; counts the attempt too, so a
   * server that keeps refusing still moves the back-off on. */
  hinted(ms: number, spreadMs = 0): number {
    this.attempt += 1;
    return Math.max(0, Math.floor(ms + this.random() * spreadMs));
  }

  reset(): void {
    this.attempt = 0;
  }
}

/** `retry_after_ms=N` in a close reason (the gateway's drain hint), or undefined. */
export function retryAfterFromReason(reason: string): number | undefined {
  const m = /retry_after_ms=(\d+)/.exec(reason);
  return m ? Number(m[1]) : undefined;
}

/** An HTTP `Retry-After` header (delta-seconds or an HTTP date) in ms, or undefined. */
export function retryAfterFromHeader(value: string | string[] | undefined, now = Date.now()): number | undefined {
  const v = Array.isArray(value) ? value[0] : value;
  if (v === undefined || v.trim() === "") return undefined;
  if (/^\d+$/.test(v.trim())) return Number(v.trim()) * 1000;
  const at = Date.parse(v);
  return Number.isNaN(at) ? undefined : Math.max(0, at - now);
}
