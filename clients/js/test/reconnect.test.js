// Reconnects against the real gateway: a drain (close 1001 with `retry_after_ms`) and
// a full gateway (HTTP 503 with `Retry-After`, visible through `ws`).

import assert from "node:assert/strict";
import { test } from "node:test";
import { WebSocket } from "ws";
import { Client, CloseCode, retryAfterFromReason } from "../dist/index.js";
import { freePort, Recorder, startGateway, token } from "./helpers.js";

test("drain: 1001 with retry_after_ms, back after exactly the hint on the next gateway", async (t) => {
  const port = await freePort();
  let gw = await startGateway({ port, id: "gw-a", env: { IMGW_SERVER_DRAIN_WINDOW_MS: "800" } });
  t.after(() => gw.stop());
  let tokens = 0;
  const c = new Client({
    url: gw.url,
    WebSocket,
    token: () => {
      tokens += 1;
      return token(201);
    },
    // Should the next gateway not be up yet when the hint expires: short back-off.
    backoff: { initialMs: 50, maxMs: 200 },
  });
  t.after(() => c.close());
  const rec = new Recorder(c);
  assert.equal((await c.connect()).gatewayId, "gw-a");

  const gone = rec.next("disconnected");
  const waiting = rec.next("reconnecting");
  const exited = gw.drain();
  const d = await gone;
  assert.equal(d.code, CloseCode.GOING_AWAY);
  assert.equal(d.willReconnect, true);
  const hint = retryAfterFromReason(d.reason);
  assert.ok(hint !== undefined, `a retry_after_ms in ${JSON.stringify(d.reason)}`);
  const r = await waiting;
  assert.equal(r.cause, "retry_after_ms");
  assert.equal(r.delayMs, hint);

  await exited;
  gw = await startGateway({ port, id: "gw-b" });
  const back = await rec.first("connected", (s) => s.gatewayId === "gw-b");
  assert.equal(back.userId, 201n);
  // The first attempt after the drain came no sooner than the hint said.
  const at = rec.events.findIndex((e) => e.name === "reconnecting");
  const next = rec.events.slice(at).find((e) => e.name === "connecting");
  const waited = next.at - rec.events[at].at;
  assert.ok(waited >= hint - 1, `attempt after ${waited} ms, hint ${hint}`);
  assert.ok(tokens >= 2, "a fresh token for the new connection");
  assert.equal(c.state, "connected");
});

test("503 over capacity: Retry-After honoured, then in once there is room", async (t) => {
  const gw = await startGateway({ env: { IMGW_CONNECTION_MAX_CONNECTIONS: "1" } });
  t.after(() => gw.stop());
  const first = new Client({ url: gw.url, WebSocket, token: token(301) });
  t.after(() => first.close());
  await first.connect();

  const second = new Client({ url: gw.url, WebSocket, token: token(302), backoff: { initialMs: 10_000 } });
  t.after(() => second.close());
  const rec = new Recorder(second);
  second.connect();
  const d = await rec.next("disconnected");
  assert.equal(d.status, 503);
  assert.equal(d.willReconnect, true);
  const err = rec.all("error")[0];
  assert.equal(err.kind, "connect");
  assert.equal(err.code, 503);
  const r = await rec.first("reconnecting");
  assert.equal(r.cause, "retry_after");
  // The gateway says 1 to 5 s; the client spreads over the second after it.
  assert.ok(r.delayMs >= 1000 && r.delayMs < 7000, `delay ${r.delayMs}`);

  first.close();
  await gw.waitOnline(301, 0);
  const s = await rec.next("connected");
  assert.equal(s.userId, 302n);
  const connecting = rec.events.filter((e) => e.name === "connecting");
  assert.equal(connecting.length, 2, "one refused attempt, one that got in");
  assert.ok(connecting[1].at - connecting[0].at >= r.delayMs - 1);
});
