// The runtime's own WebSocket (Node 22+, or Node 20/21 with --experimental-websocket;
// browsers have the same API): the client works with it as it does with `ws`. It
// cannot see a refused upgrade's HTTP status, so a 503 falls back to the back-off.

import assert from "node:assert/strict";
import { test } from "node:test";
import { Client } from "../dist/index.js";
import { Recorder, startGateway, token } from "./helpers.js";

const missing = typeof globalThis.WebSocket !== "function" && "this Node has no global WebSocket (Node 22+, or --experimental-websocket on 20/21)";

test("the global WebSocket: connect, push, send, and a 503 seen as a failed attempt", { skip: missing }, async (t) => {
  const gw = await startGateway({ env: { IMGW_CONNECTION_MAX_CONNECTIONS: "2" } });
  t.after(() => gw.stop());
  const a = new Client({ url: gw.url, token: token(501) });
  const b = new Client({ url: gw.url, token: token(502) });
  t.after(() => (a.close(), b.close()));
  const bRec = new Recorder(b);
  await Promise.all([a.connect(), b.connect()]);
  const got = bRec.next("push");
  const result = await a.send({ receiverId: 502n, content: "over the global WebSocket" });
  assert.match(result.busId, /^local-/);
  assert.equal((await got).content, "over the global WebSocket");

  const third = new Client({ url: gw.url, token: token(503), backoff: { initialMs: 60_000 } });
  t.after(() => third.close());
  const rec = new Recorder(third);
  third.connect();
  const d = await rec.next("disconnected");
  assert.equal(d.status, undefined, "the HTTP status is not visible here");
  assert.equal(d.willReconnect, true);
  assert.equal(rec.all("error")[0].kind, "connect");
  assert.equal((await rec.first("reconnecting")).cause, "backoff");
});
