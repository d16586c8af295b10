// A server that misbehaves (a raw TCP peer written here: the real gateway never does
// these things): garbage instead of an upgrade, an upgrade never answered, a close in
// the middle of a frame, frames that are not packets. Each time the client must report
// an error event and back off by its policy: never throw, never retry faster than the
// delay it announced.

import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { once } from "node:events";
import { createServer } from "node:net";
import { test } from "node:test";
import { WebSocket } from "ws";
import { Client } from "../dist/index.js";
import { Recorder, withTimeout } from "./helpers.js";

/** A TCP server that hands each connection (after reading the request head) to `behave`. */
async function badServer(behave) {
  const attempts = [];
  const sockets = new Set();
  const waiters = [];
  const srv = createServer((sock) => {
    sockets.add(sock);
    sock.on("close", () => sockets.delete(sock));
    sock.on("error", () => {});
    let head = "";
    const onData = (chunk) => {
      head += chunk.toString("latin1");
      if (!head.includes("\r\n\r\n")) return;
      sock.off("data", onData);
      attempts.push(Date.now());
      for (const w of waiters.splice(0)) w();
      behave(sock, head);
    };
    sock.on("data", onData);
  });
  srv.listen(0, "127.0.0.1");
  await once(srv, "listening");
  return {
    url: `ws://127.0.0.1:${srv.address().port}/ws`,
    attempts,
    /** Resolves once `n` upgrade requests have arrived. */
    async seen(n) {
      while (attempts.length < n) {
        await withTimeout(new Promise((r) => waiters.push(r)), `attempt ${attempts.length + 1}`);
      }
    },
    async close() {
      for (const s of sockets) s.destroy();
      srv.close();
    },
  };
}

/** The 101 answer to an upgrade request. */
function accept(sock, head) {
  const key = /sec-websocket-key:\s*(\S+)/i.exec(head)[1];
  const digest = createHash("sha1").update(`${key}258EAFA5-E914-47DA-95CA-C5AB0DC85B11`).digest("base64");
  sock.write(
    `HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ${digest}\r\n\r\n`,
  );
}

/** An unmasked server frame. */
function frame(opcode, payload) {
  assert.ok(payload.length < 126);
  return Buffer.concat([Buffer.from([0x80 | opcode, payload.length]), payload]);
}

/**
 * Runs the client against `behave` until the server has seen `attempts` attempts, and
 * checks what every such run must show: an error of `kind` per failed attempt, only
 * back-off delays (full jitter, pinned to the top of each window here), and gaps
 * between attempts no shorter than the announced delays.
 */
async function expectBackoff(t, behave, kind, { attempts = 4, connectTimeoutMs = 10_000 } = {}) {
  const server = await badServer(behave);
  t.after(() => server.close());
  const c = new Client({
    url: server.url,
    WebSocket,
    token: "t",
    connectTimeoutMs,
    backoff: { initialMs: 40, maxMs: 300, random: () => 0.999 },
  });
  t.after(() => c.close());
  const rec = new Recorder(c);
  c.connect();
  await server.seen(attempts);
  await rec.first("reconnecting", () => rec.all("reconnecting").length >= attempts - 1);
  c.close();

  const errors = rec.all("error");
  assert.ok(errors.length >= attempts - 1, `an error per attempt: ${rec.names()}`);
  for (const e of errors) assert.equal(e.kind, kind, `${e.kind}: ${e.message}`);
  const delays = rec.all("reconnecting").map((r) => r.delayMs);
  for (const r of rec.all("reconnecting")) assert.equal(r.cause, "backoff");
  // Full jitter at the top of each window: 39, 79, 159, 299 (capped), ...
  assert.deepEqual(delays.slice(0, 4), [39, 79, 159, 299].slice(0, delays.length));
  for (let i = 1; i < attempts; i++) {
    const gap = server.attempts[i] - server.attempts[i - 1];
    assert.ok(gap >= delays[i - 1] - 1, `attempt ${i + 1} came ${gap} ms after the previous one; the delay was ${delays[i - 1]}`);
  }
  assert.equal(c.state, "closed");
  return errors;
}

test("garbage instead of an HTTP answer", async (t) => {
  await expectBackoff(t, (sock) => sock.end("SSH-2.0-OpenSSH_9.2\r\n\r\n"), "connect");
});

test("an HTTP error status instead of the upgrade", async (t) => {
  const errors = await expectBackoff(t, (sock) => sock.end("HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n"), "connect");
  assert.equal(errors[0].code, 502);
});

test("an upgrade never answered: the connect timeout ends it", async (t) => {
  await expectBackoff(t, () => {}, "timeout", { attempts: 3, connectTimeoutMs: 150 });
});

test("an upgrade, then the socket closes in the middle of a frame", async (t) => {
  await expectBackoff(
    t,
    (sock, head) => {
      accept(sock, head);
      sock.end(Buffer.from([0x82, 0x7e, 0x01])); // binary, 16-bit length, one byte of it
    },
    "connect",
  );
});

test("an invalid WebSocket frame (reserved opcode)", async (t) => {
  await expectBackoff(
    t,
    (sock, head) => {
      accept(sock, head);
      sock.write(Buffer.from([0x83, 0x00]));
    },
    "connect",
  );
});

test("a binary frame that is not a Packet", async (t) => {
  await expectBackoff(
    t,
    (sock, head) => {
      accept(sock, head);
      sock.write(frame(0x2, Buffer.from([0xff, 0xff, 0xff, 0xff, 0x0f])));
    },
    "protocol",
  );
});

test("a text frame", async (t) => {
  await expectBackoff(
    t,
    (sock, head) => {
      accept(sock, head);
      sock.write(frame(0x1, Buffer.from("hello?")));
    },
    "protocol",
  );
});
