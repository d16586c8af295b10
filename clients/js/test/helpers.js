// Shared helpers for the SDK's tests: the real im-gateway binary started on fresh ports
// (its JSON log says where it listens), tokens signed with the key the test gave it,
// the admin API, and waits for client events. Waits are for events; the timeouts here
// only stop a broken build from hanging CI.

import { spawn } from "node:child_process";
import { createHmac } from "node:crypto";
import { once } from "node:events";
import { createServer } from "node:net";
import path from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../..");
/** Upper bound on one wait. */
export const HANG_MS = 20_000;
/** The key every test gateway signs with (not the shipped development secret). */
export const SECRET = "sdk-test-secret-0123456789abcdef";

/** The gateway binary: $IMGW_BIN, else target/debug/im-gateway (scripts/test.sh builds it). */
export function binary() {
  return path.resolve(process.env.IMGW_BIN ?? path.join(ROOT, "target", "debug", "im-gateway"));
}

/** A free loopback port (bound and released). */
export async function freePort() {
  const srv = createServer();
  srv.listen(0, "127.0.0.1");
  await once(srv, "listening");
  const { port } = srv.address();
  srv.close();
  await once(srv, "close");
  return port;
}

/**
 * Starts the gateway: one shard, loopback, `env` as extra IMGW_* settings. Resolves
 * once its log says "im-gateway started".
 */
export async function startGateway({ port = 0, id = "gw-sdk", env = {} } = {}) {
  const child = spawn(
    binary(),
    ["--listen", `127.0.0.1:${port}`, "--admin", "127.0.0.1:0", "--shards", "1", "--gateway-id", id],
    {
      cwd: ROOT,
      env: {
        PATH: process.env.PATH,
        IMGW_LOG_FORMAT: "json",
        IMGW_LOG_LEVEL: "info",
        IMGW_SERVER_PIN_CORES: "false",
        IMGW_AUTH_JWT_SECRET: SECRET,
        ...env,
      },
      stdio: ["ignore", "ignore", "pipe"],
    },
  );
  const gw = new Gateway(child);
  const started = await gw.waitLog((l) => l.fields?.message === "im-gateway started");
  gw.url = `ws://${started.fields.listen}/ws`;
  gw.admin = `http://${started.fields.admin}`;
  gw.port = Number(started.fields.listen.split(":").pop());
  return gw;
}

class Gateway {
  constructor(child) {
    this.child = child;
    this.log = [];
    this.waiters = [];
    this.exited = new Promise((resolve) => {
      child.once("exit", (code, signal) => resolve({ code, signal }));
      // Not startable (no binary): say so instead of an unhandled 'error'.
      child.once("error", (err) => {
        this.log.push({ raw: `cannot run ${binary()}: ${err.message}` });
        resolve({ code: null, signal: null });
      });
    });
    this.exited.then(() => {
      for (const w of this.waiters) w.reject(new Error(`im-gateway exited; log:\n${this.text()}`));
      this.waiters = [];
    });
    createInterface({ input: child.stderr }).on("line", (line) => {
      let entry;
      try {
        entry = JSON.parse(line);
      } catch {
        entry = { raw: line };
      }
      this.log.push(entry);
      this.waiters = this.waiters.filter((w) => {
        if (!w.match(entry)) return true;
        w.resolve(entry);
        return false;
      });
    });
  }

  text() {
    return this.log.map((e) => e.raw ?? JSON.stringify(e)).join("\n");
  }

  /** The first log entry (past or future) that `match` accepts. */
  waitLog(match) {
    const seen = this.log.find(match);
    if (seen) return Promise.resolve(seen);
    return withTimeout(
      new Promise((resolve, reject) => this.waiters.push({ match, resolve, reject })),
      `a log line in:\n${this.text()}`,
    );
  }

  /** SIGTERM (drain) and wait for the exit. */
  async drain() {
    this.child.kill("SIGTERM");
    return withTimeout(this.exited, "the gateway to exit after SIGTERM");
  }

  /** SIGKILL and wait for the exit (safe to call twice). */
  async stop() {
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill("SIGKILL");
    await this.exited;
  }

  async post(path, body) {
    const res = await fetch(this.admin + path, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify(body),
    });
    return { status: res.status, body: await res.json() };
  }

  async get(path) {
    const res = await fetch(this.admin + path);
    return { status: res.status, body: await res.json() };
  }

  /** Waits until `user` has `n` sessions (the gateway's own view, /v1/online). */
  async waitOnline(user, n) {
    const deadline = Date.now() + HANG_MS;
    for (;;) {
      const { body } = await this.get(`/v1/online?user_ids=${user}`);
      const got = body.users?.[0]?.sessions?.length ?? 0;
      if (got === n) return;
      if (Date.now() > deadline) throw new Error(`user ${user} never had ${n} sessions (has ${got})`);
      await new Promise((r) => setImmediate(r));
    }
  }
}

/** An HS256 JWT for `user`, signed with SECRET. */
export function token(user, { platform, ttlS = 3600, secret = SECRET } = {}) {
  const b64 = (v) => Buffer.from(JSON.stringify(v)).toString("base64url");
  const claims = { sub: String(user), exp: Math.floor(Date.now() / 1000) + ttlS };
  if (platform !== undefined) claims.platform = platform;
  const unsigned = `${b64({ alg: "HS256", typ: "JWT" })}.${b64(claims)}`;
  return `${unsigned}.${createHmac("sha256", secret).update(unsigned).digest("base64url")}`;
}

/** Rejects after HANG_MS, naming what was awaited. */
export function withTimeout(promise, what, ms = HANG_MS) {
  let timer;
  return Promise.race([
    promise,
    new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error(`timed out waiting for ${what}`)), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

/**
 * Records every event of a client, in order, and lets a test wait for the next one
 * of a kind (or one that matches).
 */
export class Recorder {
  constructor(client) {
    this.events = [];
    this.waiters = [];
    for (const name of ["connecting", "connected", "disconnected", "reconnecting", "push", "kick", "heartbeat", "error"]) {
      client.on(name, (payload) => {
        const ev = { name, payload, at: Date.now() };
        this.events.push(ev);
        this.waiters = this.waiters.filter((w) => {
          if (w.name !== name || !w.match(payload) || this.events.indexOf(ev) < w.from) return true;
          w.resolve(payload);
          return false;
        });
      });
    }
  }

  /** The next `name` event (from now on) that `match` accepts. */
  next(name, match = () => true) {
    return withTimeout(
      new Promise((resolve) => this.waiters.push({ name, match, resolve, from: this.events.length })),
      `event ${name}; events so far: ${this.names().join(", ")}`,
    );
  }

  /** The first `name` event, past or future. */
  first(name, match = () => true) {
    const seen = this.events.find((e) => e.name === name && match(e.payload));
    if (seen) return Promise.resolve(seen.payload);
    return this.next(name, match);
  }

  names() {
    return this.events.map((e) => e.name);
  }

  all(name) {
    return this.events.filter((e) => e.name === name).map((e) => e.payload);
  }
}
