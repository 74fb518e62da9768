// Self-check of the built package (run after `npm run build`): node scripts/self-check.mjs
// (`make test` runs it: tests/browser/test_bell.py).
// No browser needed: it checks the reconnect timing rules, the message parsing, that the
// package loads where there is no DOM (server rendering), and what the React wrapper renders.
import assert from "node:assert/strict";
import {
  BACKOFF_CAP_MS,
  backoffCeiling,
  backoffDelay,
  reconnectDelay,
  retryHintSeconds,
  WebSocketNotificationBell,
  NOTIFICATION_BELL_TAG,
} from "../dist/index.js";
import { parseNotification, parseServerMessage, toWebSocketUrl, httpBaseOf } from "../dist/protocol.js";

let checks = 0;
function check(name, fn) {
  fn();
  checks += 1;
  console.log(`ok - ${name}`);
}

check("backoff ceiling doubles from 1 s and is capped at 30 s", () => {
  assert.deepEqual(
    [0, 1, 2, 3, 4, 5, 6, 10, 100, 5000].map((a) => backoffCeiling(a)),
    [1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000, 30000, 30000],
  );
  assert.equal(backoffCeiling(-3), 1000);
  assert.equal(backoffCeiling(Number.NaN), 1000);
});

check("full jitter: delay = random(0, ceiling)", () => {
  assert.equal(backoffDelay(3, () => 0), 0);
  assert.equal(backoffDelay(3, () => 0.5), 4000);
  assert.ok(backoffDelay(3, () => 0.999999) < 8000);
  for (let attempt = 0; attempt < 12; attempt += 1) {
    for (let i = 0; i < 2000; i += 1) {
      const d = backoffDelay(attempt);
      assert.ok(d >= 0 && d < backoffCeiling(attempt), `attempt ${attempt}: ${d}`);
      assert.ok(d <= BACKOFF_CAP_MS);
    }
  }
  // spread over the whole window, not clustered at its end
  const samples = Array.from({ length: 4000 }, () => backoffDelay(4));
  const mean = samples.reduce((a, b) => a + b, 0) / samples.length;
  assert.ok(mean > 7000 && mean < 9000, `mean ${mean}`);
});

check("1013 retry hints are parsed from the close reason", () => {
  assert.equal(retryHintSeconds("server busy; retry after 2s"), 2);
  assert.equal(retryHintSeconds("retry after 1.5 s"), 1.5);
  assert.equal(retryHintSeconds("5"), 5);
  assert.equal(retryHintSeconds(""), null);
  assert.equal(retryHintSeconds("client fell behind"), null);
  assert.equal(retryHintSeconds("retry after 0s"), null);
  assert.equal(retryHintSeconds("retry after 99999s"), null);
});

check("a hint is honoured: never sooner, spread over [hint, 2 x hint]", () => {
  for (let i = 0; i < 2000; i += 1) {
    const d = reconnectDelay(0, 2);
    assert.ok(d >= 2000 && d <= 4000, String(d));
  }
  assert.equal(reconnectDelay(0, 2, () => 0), 2000);
  // a larger backoff wins over a small hint
  assert.equal(reconnectDelay(5, 1, () => 0.9), 27000);
  assert.ok(reconnectDelay(3, null, () => 0.5) === 4000);
});

check("messages and notifications are validated", () => {
  assert.equal(parseServerMessage("not json"), null);
  assert.equal(parseServerMessage("[1]"), null);
  assert.equal(parseServerMessage('{"x":1}'), null);
  assert.deepEqual(parseServerMessage('{"type":"heartbeat","ts":"t"}'), { type: "heartbeat", ts: "t" });
  assert.equal(parseNotification({ id: 0 }), null);
  assert.equal(parseNotification({ id: "7" }), null);
  assert.deepEqual(
    parseNotification({ id: 7, type: "milestone", title: "T", message: "M", data: { a: 1 }, timestamp: "2025-01-01T00:00:00Z", read: false }),
    { id: 7, type: "milestone", title: "T", message: "M", data: { a: 1 }, timestamp: "2025-01-01T00:00:00Z", read: false },
  );
  assert.deepEqual(parseNotification({ id: 8 }), { id: 8, type: "", title: "", message: "", data: {}, timestamp: "", read: false });
});

check("URLs: relative and http URLs become ws URLs; the API base defaults to the origin", () => {
  assert.equal(toWebSocketUrl("/ws", "https://example.test/app/"), "wss://example.test/ws");
  assert.equal(toWebSocketUrl("ws://127.0.0.1:3000/ws"), "ws://127.0.0.1:3000/ws");
  assert.equal(httpBaseOf("ws://127.0.0.1:3000/ws"), "http://127.0.0.1:3000");
  assert.equal(httpBaseOf("wss://example.test/ws"), "https://example.test");
});

check("the package loads without a DOM and registers nothing there", () => {
  assert.equal(NOTIFICATION_BELL_TAG, "treevu-notification-bell");
  assert.equal(typeof globalThis.customElements, "undefined");
});

let react = null;
try {
  react = {
    createElement: (await import("react")).createElement,
    renderToStaticMarkup: (await import("react-dom/server")).renderToStaticMarkup,
  };
} catch {
  console.log("skip - React wrapper rendering (react / react-dom not installed)");
}
if (react !== null) {
  check("the React wrapper renders the element with its attributes, never the token", () => {
    const html = react.renderToStaticMarkup(
      react.createElement("header", null,
        react.createElement(WebSocketNotificationBell, {
          url: "ws://127.0.0.1:3000/ws",
          apiBase: "http://127.0.0.1:3000",
          token: "secret-token",
          className: "bell",
        }),
      ),
    );
    assert.match(html, /^<header><treevu-notification-bell /);
    assert.match(html, /url="ws:\/\/127\.0\.0\.1:3000\/ws"/);
    assert.match(html, /api-base="http:\/\/127\.0\.0\.1:3000"/);
    assert.match(html, /class="bell"/);
    assert.doesNotMatch(html, /secret-token/);
  });
}

console.log(`\n${checks} checks passed`);
