// The client against the real gateway: connect, heartbeats, pushes from the admin API,
// UPSTREAM between two users (embedded mode), ERROR answers, kick, refused tokens.

import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { WebSocket } from "ws";
import { Client, ClientError, CloseCode, ErrorCode } from "../dist/index.js";
import { Recorder, startGateway, token } from "./helpers.js";

describe("against a real gateway", () => {
  let gw;
  const clients = [];
  before(async () => {
    // Heartbeats every second and an idle timeout of 3: a client that failed to
    // heartbeat would be closed with 4008 within the test.
    gw = await startGateway({
      env: { IMGW_CONNECTION_HEARTBEAT_INTERVAL_S: "1", IMGW_CONNECTION_IDLE_TIMEOUT_S: "3" },
    });
  });
  after(async () => {
    for (const c of clients) c.close();
    await gw.stop();
  });
  const client = (opts) => {
    const c = new Client({ url: gw.url, WebSocket, ...opts });
    clients.push(c);
    return [c, new Recorder(c)];
  };

  test("connects, reports the session, and heartbeats at the server's interval", async () => {
    const [c, rec] = client({ token: token(101), platform: 3 });
    const session = await c.connect();
    assert.equal(session.userId, 101n);
    assert.equal(session.gatewayId, "gw-sdk");
    assert.equal(session.heartbeatIntervalS, 1);
    assert.equal(c.state, "connected");
    assert.deepEqual(rec.names().slice(0, 2), ["connecting", "connected"]);
    // Four answered heartbeats: past the 3 s idle timeout, still the same connection.
    for (let i = 0; i < 4; i++) {
      const hb = await rec.next("heartbeat");
      assert.ok(hb.rttMs >= 0);
    }
    assert.equal(rec.all("disconnected").length, 0, rec.names().join(","));
    assert.equal(c.state, "connected");
    await gw.waitOnline(101, 1);
    c.close();
    assert.equal(c.state, "closed");
    const d = rec.all("disconnected").at(-1);
    assert.deepEqual([d.code, d.willReconnect, d.wasConnected], [1000, false, true]);
    await gw.waitOnline(101, 0);
  });

  test("the token can come from a callback (query transport too)", async () => {
    let calls = 0;
    const [c] = client({
      token: async () => {
        calls += 1;
        return token(102);
      },
      tokenTransport: "query",
    });
    const session = await c.connect();
    assert.equal(session.userId, 102n);
    assert.equal(calls, 1);
  });

  test("a push from the admin API arrives as a push event", async () => {
    const [c, rec] = client({ token: token(103) });
    await c.connect();
    const pushed = rec.next("push");
    const res = await gw.post("/v1/push", {
      user_ids: [103],
      msg: { msg_id: 7001, sender_id: 9, type: 2, content: "hello from the backend" },
    });
    assert.equal(res.status, 200, JSON.stringify(res.body));
    const p = await pushed;
    assert.equal(p.msgId, 7001n);
    assert.equal(p.senderId, 9n);
    assert.equal(p.type, 2);
    assert.equal(p.content, "hello from the backend");
    assert.ok(p.serverTsUs > 0n);
  });

  test("send: UPSTREAM to another user resolves with the bus id; that user gets a push", async () => {
    const [alice] = client({ token: token(104) });
    const [bob, bobRec] = client({ token: token(105) });
    await Promise.all([alice.connect(), bob.connect()]);
    const got = bobRec.next("push");
    const result = await alice.send({ receiverId: 105, type: 1, content: "hi bob", clientMsgId: "m-1" });
    assert.match(result.busId, /^local-\d+$/);
    const p = await got;
    assert.equal(p.senderId, 104n);
    assert.equal(p.receiverId, 105n);
    assert.equal(p.content, "hi bob");
    assert.equal(`local-${p.msgId}`, result.busId);
  });

  test("send: the server's ERROR rejects the promise with its code", async () => {
    const [c] = client({ token: token(106) });
    await c.connect();
    await assert.rejects(c.send({ receiverId: 999_999, content: "anyone?" }), (e) => {
      assert.ok(e instanceof ClientError);
      assert.equal(e.kind, "server");
      assert.equal(e.code, ErrorCode.RECEIVER_OFFLINE);
      return true;
    });
    // The connection is still fine.
    await assert.rejects(c.send({ content: "no receiver" }), (e) => e.code === ErrorCode.BAD_REQUEST);
    assert.equal(c.state, "connected");
  });

  test("send while not connected rejects at once", async () => {
    const [c] = client({ token: token(107) });
    await assert.rejects(c.send({ receiverId: 1, content: "x" }), (e) => e.kind === "not_connected");
  });

  test("kick: a kick event, close 4003, and no reconnect", async () => {
    const [c, rec] = client({ token: token(108) });
    await c.connect();
    await gw.waitOnline(108, 1);
    const kicked = rec.next("kick");
    const gone = rec.next("disconnected");
    const res = await gw.post("/v1/kick", { user_id: 108, reason: "admin says bye" });
    assert.equal(res.status, 200, JSON.stringify(res.body));
    assert.equal((await kicked).reason, "admin says bye");
    const d = await gone;
    assert.equal(d.code, CloseCode.KICKED);
    assert.equal(d.willReconnect, false);
    assert.equal(c.state, "closed");
    assert.equal(rec.all("reconnecting").length, 0);
  });

  test("a refused token: close 4001, an error, and no reconnect; connect() rejects", async () => {
    const [c, rec] = client({ token: token(109, { secret: "not-the-gateways-secret-at-all" }) });
    await assert.rejects(c.connect(), (e) => e.kind === "disconnected" && e.code === CloseCode.AUTH_FAILED);
    const d = rec.all("disconnected")[0];
    assert.equal(d.code, CloseCode.AUTH_FAILED);
    assert.equal(d.wasConnected, false);
    assert.equal(d.willReconnect, false);
    const err = rec.all("error")[0];
    assert.equal(err.kind, "connect");
    assert.equal(err.code, CloseCode.AUTH_FAILED);
    assert.equal(c.state, "closed");
    assert.equal(rec.all("reconnecting").length, 0);
  });

  test("a refused token in the query: HTTP 401, seen through ws, no reconnect with a fixed token", async () => {
    const [c, rec] = client({ token: "not.a.jwt", tokenTransport: "query" });
    await assert.rejects(c.connect());
    const d = rec.all("disconnected")[0];
    assert.equal(d.status, 401);
    assert.equal(d.willReconnect, false);
    assert.equal(rec.all("error")[0].code, 401);
  });

  test("a listener that throws becomes an error event; the client carries on", async () => {
    const [c, rec] = client({ token: token(110) });
    c.on("connected", () => {
      throw new Error("app bug");
    });
    await c.connect();
    const err = await rec.first("error");
    assert.equal(err.kind, "listener");
    assert.match(err.message, /app bug/);
    assert.equal(c.state, "connected");
  });
});
