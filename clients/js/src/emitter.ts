// A small typed event emitter that runs the same in browsers and Node (Node's
// EventEmitter is not in browsers; EventTarget's typing is clumsy for payloads).
//
// A listener that throws never breaks the client: the exception is handed to the
// `onListenerError` hook (the client turns it into an `error` event) and the other
// listeners still run.

export type Listener<T> = (payload: T) => void;

export class Emitter<Events extends object> {
  private listeners: { [K in keyof Events]?: Listener<Events[K]>[] } = {};

  /** Called with whatever a listener throws. */
  protected onListenerError(_event: keyof Events, _err: unknown): void {}

  /** Adds `fn` for `event`; returns a function that removes it. */
  on<K extends keyof Events>(event: K, fn: Listener<Events[K]>): () => void {
    (this.listeners[event] ??= []).push(fn);
    return () => this.off(event, fn);
  }

  /** Adds `fn` for the next `event` only. */
  once<K extends keyof Events>(event: K, fn: Listener<Events[K]>): () => void {
    const off = this.on(event, (payload) => {
      off();
      fn(payload);
    });
    return off;
  }

  off<K extends keyof Events>(event: K, fn: Listener<Events[K]>): void {
    const list = this.listeners[event];
    if (!list) return;
    const at = list.indexOf(fn);
    if (at >= 0) list.splice(at, 1);
  }

  protected emit<K extends keyof Events>(event: K, payload: Events[K]): void {
    const list = this.listeners[event];
    if (!list || list.length === 0) return;
    for (const fn of [...list]) {
      try {
        fn(payload);
      } catch (err) {
        this.onListenerError(event, err);
      }
    }
  }

  protected listenerCount(event: keyof Events): number {
    return this.listeners[event]?.length ?? 0;
  }
}
