// The client: one logical connection to the gateway that survives disconnects.
//
// It owns the socket's whole life: the token (fresh from a callback at every attempt),
// the upgrade and the AUTH exchange, heartbeats at the server's interval (and a dead
// connection noticed when nothing comes back), requests and their answers matched by
// `seq`, the resume position (last PushMsg.seq and epoch, sent again at every
// reconnect), batched cumulative ACKs, and when to try again (./backoff.ts). Every
// socket event is checked against the attempt it belongs to (`gen`), so a late event of
// an abandoned socket changes nothing. Nothing here throws out of a socket or timer
// callback: what goes wrong becomes an `error` event, and the client backs off.

import { create, type MessageInitShape } from "@bufbuild/protobuf";
import { Backoff, retryAfterFromHeader, retryAfterFromReason, type BackoffOptions } from "./backoff.js";
import { protoCodec, type Codec, type Frame } from "./codec.js";
import { Emitter } from "./emitter.js";
import { ClientError, CloseCode } from "./errors.js";
import {
  AckSchema,
  AuthRequestSchema,
  AuthResultSchema,
  Command,
  ErrorSchema,
  KickSchema,
  PushMsgSchema,
  UpstreamMsgSchema,
  UpstreamResultSchema,
  type AuthResult,
  type PushMsg,
  type UpstreamResult,
} from "./gen/im_pb.js";

/** What the client needs of a WebSocket: the browser's, Node 22's global, or `ws`. */
export interface WebSocketLike {
  binaryType: string;
  readonly readyState: number;
  send(data: Uint8Array): void;
  close(code?: number, reason?: string): void;
  onopen: ((ev: unknown) => void) | null;
  onmessage: ((ev: { data: unknown }) => void) | null;
  onclose: ((ev: { code: number; reason: string }) => void) | null;
  onerror: ((ev: unknown) => void) | null;
}

export type WebSocketConstructor = new (url: string, protocols?: string | string[]) => WebSocketLike;

/** A token, or a function that returns a fresh one (called before every attempt). */
export type TokenSource = string | (() => string | Promise<string>);

export type Id = bigint | number | string;

export interface ClientOptions {
  /** The gateway's WebSocket endpoint, e.g. `ws://127.0.0.1:8080/ws`. */
  url: string;
  token: TokenSource;
  /** How the token travels: `"auth"` (default) in the first AUTH packet, which keeps
   * it out of URLs and logs and makes a refused token a 4001 close every runtime can
   * see; `"query"` as `?token=` at the upgrade (a refused token is then an HTTP 401,
   * which browsers report as a plain failed connection). */
  tokenTransport?: "auth" | "query";
  /** Platform (1 iOS, 2 Android, 3 web, ...); the token's `platform` claim wins. */
  platform?: number;
  deviceId?: string;
  /** `Header.client_id` on every packet (default "im-gateway-js"). */
  clientId?: string;
  /** The WebSocket implementation. Default: the global `WebSocket` (browsers,
   * Node 22+). On Node 18/20 pass the `ws` package's export. */
  WebSocket?: WebSocketConstructor;
  /** Reconnect after a lost connection (default true). Never after 4001 (auth failed)
   * or 4003 (kicked). */
  reconnect?: boolean;
  backoff?: BackoffOptions;
  /** The upgrade plus the AUTH result must take no longer, ms (default 10000). */
  connectTimeoutMs?: number;
  /** An UPSTREAM unanswered this long rejects, ms (default 10000). */
  requestTimeoutMs?: number;
  /** A connection that lived this long resets the back-off, ms (default 10000); one
   * that is accepted and dropped sooner keeps backing off. */
  stableAfterMs?: number;
  /** Where a previous run stopped (e.g. kept in localStorage): pushes after it are
   * replayed at the first connect (reliable delivery). */
  resume?: { lastSeq: Id; epoch: string };
  /** Acknowledge pushes that carry a `seq` with cumulative ACKs (default true). */
  autoAck?: boolean;
  /** An ACK goes out this long after the first unacknowledged push, ms (default 500)... */
  ackDelayMs?: number;
  /** ... or at once when this many are unacknowledged (default 64). */
  ackEvery?: number;
}

export type ClientState = "idle" | "connecting" | "connected" | "reconnecting" | "closed";

/** The `connected` event: the server's AuthResult. `recovered` (after a resume) is false
 * when pushes were lost: resync from your backend. */
export type Session = AuthResult;

export interface Disconnect {
  code: number;
  reason: string;
  /** The connection had been authenticated (false: a failed attempt). */
  wasConnected: boolean;
  willReconnect: boolean;
  /** HTTP status of a refused upgrade, where the WebSocket implementation shows it. */
  status?: number;
}

export interface Reconnecting {
  delayMs: number;
  /** Failed attempts since the last stable connection. */
  attempt: number;
  /** What set the delay: the back-off, a 1001 close's `retry_after_ms`, or a 503's
   * `Retry-After`. */
  cause: "backoff" | "retry_after_ms" | "retry_after";
}

export interface ClientEvents {
  connecting: { attempt: number };
  connected: Session;
  disconnected: Disconnect;
  reconnecting: Reconnecting;
  push: PushMsg;
  kick: { reason: string };
  heartbeat: { rttMs: number };
  error: ClientError;
}

/** An UPSTREAM message (`UpstreamMsg`): ids as bigint, number or decimal string. */
export interface Outgoing {
  receiverId?: Id;
  groupId?: Id;
  type?: number;
  content?: string;
  clientMsgId?: string;
}

interface Pending {
  resolve: (r: UpstreamResult) => void;
  reject: (e: ClientError) => void;
  timer: ReturnType<typeof setTimeout>;
}

/** A WebSocket that shows a refused upgrade's response (the `ws` package). */
interface NodeStyleSocket {
  on(event: "unexpected-response", fn: (req: unknown, res: HttpResponse) => void): void;
  terminate?: () => void;
}
interface HttpResponse {
  statusCode?: number;
  headers?: Record<string, string | string[] | undefined>;
  resume?: () => void;
}

const DEFAULT_HEARTBEAT_S = 30;
/** How long a close may follow a socket error before the client stops waiting, ms. */
const ERROR_GRACE_MS = 1000;

function toBigInt(v: Id | undefined): bigint {
  if (v === undefined) return 0n;
  return typeof v === "bigint" ? v : BigInt(v);
}

function describe(err: unknown): string {
  if (err instanceof Error) return err.message;
  const e = err as { message?: unknown; error?: unknown } | null;
  if (e?.error instanceof Error) return e.error.message;
  if (typeof e?.message === "string" && e.message !== "") return e.message;
  return "socket error";
}

export class Client extends Emitter<ClientEvents> {
  private readonly o: Required<
    Pick<ClientOptions, "url" | "token" | "tokenTransport" | "clientId" | "reconnect" | "connectTimeoutMs" | "requestTimeoutMs" | "stableAfterMs" | "autoAck" | "ackDelayMs" | "ackEvery">
  > &
    ClientOptions;
  private readonly WS: WebSocketConstructor;
  private readonly codec: Codec = protoCodec;
  private readonly backoff: Backoff;

  private _state: ClientState = "idle";
  /** The attempt that owns `socket`; bumped whenever an attempt is abandoned. */
  private gen = 0;
  private attempts = 0;
  private socket: WebSocketLike | null = null;
  private session: Session | null = null;
  private connectedAt = 0;
  private lastRx = 0;
  private nextSeq = 1n;
  private readonly pending = new Map<bigint, Pending>();
  private heartbeatTimer?: ReturnType<typeof setTimeout>;
  private heartbeatSent = new Map<bigint, number>();
  private connectTimer?: ReturnType<typeof setTimeout>;
  private reconnectTimer?: ReturnType<typeof setTimeout>;
  private ackTimer?: ReturnType<typeof setTimeout>;
  private errorGraceTimer?: ReturnType<typeof setTimeout>;
  /** A refused upgrade's status and Retry-After (ms), when visible. */
  private refusal?: { status: number; retryAfterMs?: number };
  private lastError?: string;
  /** This attempt's failure has had its `error` event. */
  private reported = false;

  private _lastSeq = 0n;
  private _epoch = "";
  private ackedSeq = 0n;
  private unacked = 0;
  private firstConnect?: { resolve: (s: Session) => void; reject: (e: ClientError) => void };

  constructor(options: ClientOptions) {
    super();
    this.o = {
      tokenTransport: "auth",
      clientId: "im-gateway-js",
      reconnect: true,
      connectTimeoutMs: 10_000,
      requestTimeoutMs: 10_000,
      stableAfterMs: 10_000,
      autoAck: true,
      ackDelayMs: 500,
      ackEvery: 64,
      ...options,
    };
    const WS = options.WebSocket ?? (globalThis as { WebSocket?: WebSocketConstructor }).WebSocket;
    if (!WS) {
      throw new TypeError(
        "no WebSocket implementation: this runtime has no global WebSocket (Node < 22); pass one, e.g. `new Client({ ..., WebSocket: (await import('ws')).WebSocket })`",
      );
    }
    this.WS = WS;
    this.backoff = new Backoff(options.backoff);
    if (options.resume) {
      this._lastSeq = toBigInt(options.resume.lastSeq);
      this._epoch = options.resume.epoch;
      this.ackedSeq = this._lastSeq;
    }
  }

  get state(): ClientState {
    return this._state;
  }

  /** The server's AuthResult of the current connection, or null. */
  get current(): Session | null {
    return this._state === "connected" ? this.session : null;
  }

  /** The resume position: keep it to resume in a later run (option `resume`). */
  get position(): { lastSeq: bigint; epoch: string } {
    return { lastSeq: this._lastSeq, epoch: this._epoch };
  }

  /** Starts connecting (and keeps reconnecting). The promise resolves at the first
   * `connected` and rejects if the client is closed for good before that (4001,
   * 4003, `close()`, or `reconnect: false` and a failure); it may be ignored: the
   * events say the same. */
  connect(): Promise<Session> {
    if (this._state === "connected" && this.session) return Promise.resolve(this.session);
    const p = new Promise<Session>((resolve, reject) => {
      const prev = this.firstConnect;
      this.firstConnect = {
        resolve: (s) => {
          prev?.resolve(s);
          resolve(s);
        },
        reject: (e) => {
          prev?.reject(e);
          reject(e);
        },
      };
    });
    p.catch(() => {}); // ignoring the promise is allowed: no unhandled rejection
    if (this._state === "idle" || this._state === "closed") {
      this.backoff.reset();
      void this.open();
    }
    return p;
  }

  /** Closes for good (no reconnect). Pending requests reject. */
  close(): void {
    const was = this._state;
    if (was === "idle" || was === "closed") return;
    this.gen += 1;
    const wasConnected = was === "connected";
    this.flushAck();
    this.dropSocket(CloseCode.NORMAL, "client closed");
    clearTimeout(this.reconnectTimer);
    this.reconnectTimer = undefined;
    this.failPending("client closed");
    this.setState("closed");
    this.emit("disconnected", { code: CloseCode.NORMAL, reason: "client closed", wasConnected, willReconnect: false });
    this.settleFirst(new ClientError("disconnected", "client closed"));
  }

  /** Sends an UPSTREAM message; resolves with the server's UpstreamResult, rejects on
   * its ERROR (`kind: "server"`, `code`), a timeout, or a disconnect (then the message
   * may or may not have arrived: give it a `clientMsgId` so the backend can dedupe). */
  send(msg: Outgoing): Promise<UpstreamResult> {
    const socket = this.socket;
    if (this._state !== "connected" || !socket) {
      return Promise.reject(new ClientError("not_connected", `not connected (${this._state})`));
    }
    const seq = this.nextSeq++;
    const body = create(UpstreamMsgSchema, {
      receiverId: toBigInt(msg.receiverId),
      groupId: toBigInt(msg.groupId),
      type: msg.type ?? 0,
      content: msg.content ?? "",
      clientMsgId: msg.clientMsgId ?? "",
    });
    return new Promise<UpstreamResult>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(seq);
        reject(new ClientError("timeout", `UPSTREAM seq ${seq} unanswered after ${this.o.requestTimeoutMs} ms`));
      }, this.o.requestTimeoutMs);
      this.pending.set(seq, { resolve, reject, timer });
      this.write(Command.UPSTREAM, seq, UpstreamMsgSchema, body);
    });
  }

  // ---- one attempt -----------------------------------------------------------------

  private async open(): Promise<void> {
    const gen = ++this.gen;
    this.attempts += 1;
    this.refusal = undefined;
    this.lastError = undefined;
    this.reported = false;
    this.setState("connecting");
    this.emit("connecting", { attempt: this.attempts });
    let token: string;
    try {
      const src = this.o.token;
      token = typeof src === "string" ? src : await src();
      if (typeof token !== "string" || token === "") throw new Error("the token callback returned no token");
    } catch (err) {
      if (gen !== this.gen) return;
      this.reported = true;
      this.emit("error", new ClientError("token", `token: ${describe(err)}`, undefined, { cause: err }));
      this.ended(gen, CloseCode.ABNORMAL, "no token");
      return;
    }
    if (gen !== this.gen) return; // closed while the callback ran
    let socket: WebSocketLike;
    try {
      socket = new this.WS(this.url(token), this.codec.subprotocol);
    } catch (err) {
      this.reported = true;
      this.emit("error", new ClientError("connect", `cannot open ${this.o.url}: ${describe(err)}`, undefined, { cause: err }));
      this.ended(gen, CloseCode.ABNORMAL, "cannot open");
      return;
    }
    socket.binaryType = "arraybuffer";
    this.socket = socket;
    this.nextSeq = 1n;
    this.connectTimer = setTimeout(
      () => this.abandon(gen, "timeout", `no ${socket.readyState === 0 ? "upgrade" : "AUTH result"} within ${this.o.connectTimeoutMs} ms`),
      this.o.connectTimeoutMs,
    );
    const nodeStyle = socket as unknown as Partial<NodeStyleSocket>;
    if (typeof nodeStyle.on === "function") {
      // `ws` shows a refused upgrade's response (and leaves the socket to us).
      nodeStyle.on("unexpected-response", (_req, res) => {
        if (gen !== this.gen) return;
        this.refusal = { status: res.statusCode ?? 0, retryAfterMs: retryAfterFromHeader(res.headers?.["retry-after"]) };
        res.resume?.();
        if (nodeStyle.terminate) nodeStyle.terminate();
        else socket.close();
      });
    }
    socket.onopen = () => {
      if (gen !== this.gen) return;
      this.lastRx = Date.now();
      if (this.o.tokenTransport === "auth") {
        this.write(Command.AUTH, this.nextSeq++, AuthRequestSchema, this.authRequest(token));
      }
    };
    socket.onmessage = (ev) => this.onFrame(gen, ev.data);
    // An error is normally followed by a close; keep what it said for the error event.
    // Not always: Node 20's built-in WebSocket fires only `error` for a refused
    // upgrade and stays CONNECTING. So an error before the upgrade ends the attempt
    // here, and after it the close gets a moment before we stop waiting for it.
    socket.onerror = (ev) => {
      if (gen !== this.gen) return;
      this.lastError = describe(ev);
      if (socket.readyState === 0) {
        this.dropSocket(CloseCode.NORMAL, "error");
        this.ended(gen, CloseCode.ABNORMAL, "");
      } else {
        this.errorGraceTimer ??= setTimeout(() => {
          this.dropSocket(CloseCode.NORMAL, "error");
          this.ended(gen, CloseCode.ABNORMAL, "");
        }, ERROR_GRACE_MS);
      }
    };
    socket.onclose = (ev) => {
      if (gen !== this.gen) return;
      this.socket = null;
      this.ended(gen, ev.code, ev.reason ?? "");
    };
  }

  private url(token: string): string {
    const u = new URL(this.o.url);
    const q = u.searchParams;
    if (this.o.tokenTransport === "query") {
      q.set("token", token);
      if (this.o.platform !== undefined) q.set("platform", String(this.o.platform));
      if (this.o.deviceId) q.set("device_id", this.o.deviceId);
      if (this._lastSeq > 0n) {
        q.set("last_seq", this._lastSeq.toString());
        q.set("epoch", this._epoch);
      }
    }
    return u.toString();
  }

  private authRequest(token: string): MessageInitShape<typeof AuthRequestSchema> {
    return {
      token,
      platform: this.o.platform ?? 0,
      deviceId: this.o.deviceId ?? "",
      lastSeq: this._lastSeq,
      epoch: this._lastSeq > 0n ? this._epoch : "",
    };
  }

  private onFrame(gen: number, data: unknown): void {
    if (gen !== this.gen) return;
    this.lastRx = Date.now();
    if (typeof data === "string") {
      this.abandon(gen, "protocol", "text frame from the server (expected one binary protobuf Packet)");
      return;
    }
    let frame: Frame;
    try {
      frame = this.codec.decode(data as ArrayBuffer);
    } catch (err) {
      this.abandon(gen, "protocol", `undecodable frame: ${describe(err)}`);
      return;
    }
    try {
      this.dispatch(gen, frame);
    } catch (err) {
      // A body that does not decode (listener errors never get here: see Emitter).
      this.abandon(gen, "protocol", `bad ${Command[frame.command] ?? frame.command} body: ${describe(err)}`);
    }
  }

  private dispatch(gen: number, frame: Frame): void {
    switch (frame.command) {
      case Command.AUTH:
        if (this._state === "connecting") this.authenticated(gen, this.codec.body(AuthResultSchema, frame));
        return;
      case Command.HEARTBEAT: {
        const sent = this.heartbeatSent.get(frame.seq);
        if (sent !== undefined) {
          this.heartbeatSent.delete(frame.seq);
          this.emit("heartbeat", { rttMs: Date.now() - sent });
        }
        return;
      }
      case Command.PUSH:
        this.pushed(this.codec.body(PushMsgSchema, frame));
        return;
      case Command.UPSTREAM: {
        const result = this.codec.body(UpstreamResultSchema, frame);
        const p = this.take(frame.seq);
        p?.resolve(result);
        return;
      }
      case Command.ERROR: {
        const e = this.codec.body(ErrorSchema, frame);
        const err = new ClientError("server", e.message || `server error ${e.code}`, e.code);
        const p = this.take(frame.seq);
        if (p) p.reject(err);
        else this.emit("error", err);
        return;
      }
      case Command.KICK:
        this.emit("kick", { reason: this.codec.body(KickSchema, frame).reason });
        return;
      default:
        return; // a command this client does not know: later protocol versions may add some
    }
  }

  private authenticated(gen: number, result: AuthResult): void {
    clearTimeout(this.connectTimer);
    this.connectTimer = undefined;
    if (result.epoch !== "" && result.epoch !== this._epoch) {
      // A new history lineage: positions of the old one mean nothing here.
      if (this._epoch !== "") this._lastSeq = 0n;
      this._epoch = result.epoch;
      this.ackedSeq = this._lastSeq;
    }
    this.session = result;
    this.connectedAt = Date.now();
    this.setState("connected");
    const intervalMs = (result.heartbeatIntervalS || DEFAULT_HEARTBEAT_S) * 1000;
    this.heartbeatTimer = setTimeout(() => this.beat(gen, intervalMs), intervalMs);
    this.emit("connected", result);
    this.settleFirst(null, result);
  }

  /** One heartbeat tick: the connection is dead when nothing came for 2.5 intervals
   * (two unanswered heartbeats); otherwise send one. */
  private beat(gen: number, intervalMs: number): void {
    if (gen !== this.gen) return;
    const silent = Date.now() - this.lastRx;
    if (silent > intervalMs * 2.5) {
      this.abandon(gen, "timeout", `nothing from the server for ${silent} ms (heartbeats unanswered)`);
      return;
    }
    const seq = this.nextSeq++;
    this.heartbeatSent.clear(); // only the latest one is timed
    this.heartbeatSent.set(seq, Date.now());
    this.write(Command.HEARTBEAT, seq);
    this.heartbeatTimer = setTimeout(() => this.beat(gen, intervalMs), intervalMs);
  }

  private pushed(msg: PushMsg): void {
    if (msg.seq > 0n) {
      // Within one epoch the server never sends a seq twice; a duplicate here could
      // only come from a replay overlapping what we already have: drop it.
      if (msg.seq <= this._lastSeq) return;
      this._lastSeq = msg.seq;
      if (this.o.autoAck) this.scheduleAck();
    }
    this.emit("push", msg);
  }

  private scheduleAck(): void {
    this.unacked += 1;
    if (this.unacked >= this.o.ackEvery) {
      this.flushAck();
    } else if (this.ackTimer === undefined) {
      this.ackTimer = setTimeout(() => this.flushAck(), this.o.ackDelayMs);
    }
  }

  private flushAck(): void {
    clearTimeout(this.ackTimer);
    this.ackTimer = undefined;
    this.unacked = 0;
    if (this._lastSeq > this.ackedSeq && this._state === "connected") {
      this.ackedSeq = this._lastSeq;
      this.write(Command.ACK, this.nextSeq++, AckSchema, create(AckSchema, { upToSeq: this._lastSeq }));
    }
  }

  private write<D extends Parameters<Codec["encode"]>[2]>(
    command: Command,
    seq: bigint,
    schema?: D,
    body?: MessageInitShape<NonNullable<D>>,
  ): void {
    const socket = this.socket;
    if (!socket || socket.readyState !== 1) return;
    const msg = schema && body ? create(schema, body) : undefined;
    try {
      socket.send(this.codec.encode(command, seq, schema, msg, this.o.clientId));
    } catch (err) {
      // A socket that is closing: its close event follows and does the rest.
      this.lastError = describe(err);
    }
  }

  private take(seq: bigint): Pending | undefined {
    const p = this.pending.get(seq);
    if (p) {
      this.pending.delete(seq);
      clearTimeout(p.timer);
    }
    return p;
  }

  // ---- endings ---------------------------------------------------------------------

  /** We end the attempt ourselves (timeout, garbage from the server). */
  private abandon(gen: number, kind: "timeout" | "protocol", message: string): void {
    if (gen !== this.gen) return;
    this.reported = true;
    this.emit("error", new ClientError(kind, message));
    if (gen !== this.gen) return; // an error listener called close()
    this.dropSocket(kind === "protocol" ? CloseCode.PROTOCOL_ERROR : CloseCode.NORMAL, kind);
    this.ended(gen, CloseCode.ABNORMAL, message);
  }

  /** Detaches and closes the current socket; its events no longer reach us. */
  private dropSocket(code: number, reason: string): void {
    const socket = this.socket;
    this.socket = null;
    this.stopTimers();
    if (!socket) return;
    socket.onopen = socket.onmessage = socket.onclose = null;
    socket.onerror = () => {}; // `ws` must always have an error listener
    try {
      socket.close(code, reason);
    } catch {
      try {
        socket.close();
      } catch {
        // already gone
      }
    }
  }

  private stopTimers(): void {
    clearTimeout(this.connectTimer);
    clearTimeout(this.heartbeatTimer);
    clearTimeout(this.ackTimer);
    clearTimeout(this.errorGraceTimer);
    this.connectTimer = this.heartbeatTimer = this.ackTimer = this.errorGraceTimer = undefined;
    this.unacked = 0;
    this.heartbeatSent.clear();
  }

  /** The attempt `gen` is over (closed by the server, failed, or abandoned by us):
   * report it and decide whether and when to try again. */
  private ended(gen: number, code: number, reason: string): void {
    if (gen !== this.gen) return;
    this.gen += 1;
    this.stopTimers();
    this.socket = null;
    const wasConnected = this._state === "connected";
    const lived = wasConnected ? Date.now() - this.connectedAt : 0;
    this.session = null;
    this.failPending(`connection closed (${code}${reason ? ` ${reason}` : ""})`);
    const refusal = this.refusal;
    if (!wasConnected && !this.reported) {
      // A failed attempt says why once (abandon(), the token and the constructor have
      // reported theirs already).
      const why = refusal
        ? `upgrade refused: HTTP ${refusal.status}`
        : code === CloseCode.ABNORMAL
          ? this.lastError ?? "connection failed"
          : `closed ${code}${reason ? ` (${reason})` : ""} before the AUTH result`;
      this.emit("error", new ClientError("connect", `${this.o.url}: ${why}`, refusal?.status ?? (code === CloseCode.ABNORMAL ? undefined : code)));
    } else if (!this.reported && this.lastError) {
      this.emit("error", new ClientError("socket", `${this.o.url}: ${this.lastError}`));
    }
    if (gen + 1 !== this.gen) return; // a listener closed or reconnected the client
    const final =
      code === CloseCode.AUTH_FAILED ||
      code === CloseCode.KICKED ||
      (refusal?.status === 401 && typeof this.o.token === "string") ||
      !this.o.reconnect;
    this.emit("disconnected", {
      code,
      reason,
      wasConnected,
      willReconnect: !final,
      ...(refusal ? { status: refusal.status } : {}),
    });
    if (gen + 1 !== this.gen) return;
    if (final) {
      this.setState("closed");
      this.settleFirst(new ClientError("disconnected", `closed for good: ${code} ${reason}`.trim(), code));
      return;
    }
    if (lived >= this.o.stableAfterMs) this.backoff.reset();
    const hint = code === CloseCode.GOING_AWAY ? retryAfterFromReason(reason) : undefined;
    let delayMs: number;
    let cause: Reconnecting["cause"];
    if (hint !== undefined) {
      // The server spread its clients over the drain window already: come back then.
      delayMs = this.backoff.hinted(hint);
      cause = "retry_after_ms";
    } else if (refusal?.status === 503 && refusal.retryAfterMs !== undefined) {
      // Retry-After has a resolution of seconds: spread over the second after it.
      delayMs = this.backoff.hinted(refusal.retryAfterMs, 1000);
      cause = "retry_after";
    } else {
      delayMs = this.backoff.next();
      cause = "backoff";
    }
    this.setState("reconnecting");
    this.emit("reconnecting", { delayMs, attempt: this.backoff.attempt, cause });
    if (this._state !== "reconnecting") return; // a listener closed the client
    this.reconnectTimer = setTimeout(() => {
      this.reconnectTimer = undefined;
      if (this._state === "reconnecting") void this.open();
    }, delayMs);
  }

  private failPending(why: string): void {
    for (const [seq, p] of this.pending) {
      clearTimeout(p.timer);
      p.reject(new ClientError("disconnected", `UPSTREAM seq ${seq}: ${why}`));
    }
    this.pending.clear();
  }

  private settleFirst(err: ClientError | null, session?: Session): void {
    const f = this.firstConnect;
    if (!f) return;
    this.firstConnect = undefined;
    if (err) f.reject(err);
    else if (session) f.resolve(session);
  }

  private setState(s: ClientState): void {
    this._state = s;
  }

  protected override onListenerError(event: keyof ClientEvents, err: unknown): void {
    if (event === "error") {
      // An error listener that throws has nowhere left to report to.
      console.error("im-gateway client: an 'error' listener threw:", err);
      return;
    }
    this.emit("error", new ClientError("listener", `a '${String(event)}' listener threw: ${describe(err)}`, undefined, { cause: err }));
  }
}
