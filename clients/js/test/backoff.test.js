// The back-off policy and the parsing of the server's retry hints.

import assert from "node:assert/strict";
import { test } from "node:test";
import { Backoff, retryAfterFromHeader, retryAfterFromReason } from "../dist/index.js";

test("full jitter: each delay is uniform in a window that doubles up to the cap", () => {
  let r = 0;
  const b = new Backoff({ initialMs: 100, maxMs: 1000, random: () => r });
  const windows = [];
  for (let i = 0; i < 6; i++) {
    windows.push(b.window());
    r = 0;
    assert.equal(b.next(), 0);
    b.attempt -= 1;
    r = 0.999999;
    assert.equal(b.next(), Math.floor(0.999999 * windows[i]));
  }
  assert.deepEqual(windows, [100, 200, 400, 800, 1000, 1000]);
  b.reset();
  assert.equal(b.window(), 100);
});

test("a server hint counts as an attempt, so a server that keeps refusing still backs the client off", () => {
  const b = new Backoff({ initialMs: 100, maxMs: 10_000, random: () => 0.5 });
  assert.equal(b.hinted(2000, 1000), 2500);
  assert.equal(b.attempt, 1);
  assert.equal(b.window(), 200);
});

test("retry_after_ms is read from a 1001 close reason", () => {
  assert.equal(retryAfterFromReason("going away; retry_after_ms=1234"), 1234);
  assert.equal(retryAfterFromReason("going away"), undefined);
  assert.equal(retryAfterFromReason(""), undefined);
});

test("Retry-After: delta-seconds or an HTTP date", () => {
  assert.equal(retryAfterFromHeader("3"), 3000);
  assert.equal(retryAfterFromHeader(["7"]), 7000);
  assert.equal(retryAfterFromHeader(undefined), undefined);
  assert.equal(retryAfterFromHeader("soon"), undefined);
  const now = Date.parse("Wed, 21 Oct 2026 07:28:00 GMT");
  assert.equal(retryAfterFromHeader("Wed, 21 Oct 2026 07:28:05 GMT", now), 5000);
});
