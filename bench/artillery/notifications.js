// The receive side of notifications.yml: SPEC §4's first-message auth, then ack every
// notification. Artillery's `send`/`wait` steps read one message per step and leave the socket
// without a listener between steps, so a notification that arrived then would be lost to the
// count; one listener, installed before `auth` is sent, sees every frame instead.
//
// Metrics (beside Artillery's vusers.* and errors.*):
//   treevu.welcome           counter    welcomes received
//   treevu.welcome_ms        histogram  auth sent → welcome received
//   treevu.notifications     counter    distinct notifications received (one ack sent for each)
//   treevu.duplicates        counter    a notification id seen twice in one session (never expected)
//   treevu.latency_ms        histogram  received − data.sentAt (the broadcast request's send time)
//   treevu.heartbeats        counter    heartbeats answered with a pong
//   treevu.server_errors     counter    {"type":"error"} frames
'use strict';

module.exports = { authenticate, receiveAndAck };

class Inbox {
  constructor(ws, events) {
    this.ws = ws;
    this.events = events;
    this.welcome = null;
    this.seen = new Set();
    this.closed = null;
    this.wake = () => {};
    ws.on('message', (data) => this.onMessage(data));
    ws.on('close', (code, reason) => {
      this.closed = `closed ${code}${reason.length ? ` ${reason}` : ''}`;
      this.wake();
    });
  }

  onMessage(data) {
    const now = Date.now();
    let msg;
    try {
      msg = JSON.parse(data.toString());
    } catch {
      this.events.emit('counter', 'treevu.unparsable', 1);
      return;
    }
    switch (msg.type) {
      case 'welcome':
        this.welcome = msg;
        this.events.emit('counter', 'treevu.welcome', 1);
        break;
      case 'notification': {
        const { id, data: payload } = msg.notification;
        if (this.seen.has(id)) {
          this.events.emit('counter', 'treevu.duplicates', 1);
          break;
        }
        this.seen.add(id);
        this.ws.send(JSON.stringify({ type: 'ack', id }));
        this.events.emit('counter', 'treevu.notifications', 1);
        if (payload && typeof payload.sentAt === 'number') {
          this.events.emit('histogram', 'treevu.latency_ms', now - payload.sentAt * 1000);
        }
        break;
      }
      case 'heartbeat':
        this.ws.send(JSON.stringify({ type: 'pong' }));
        this.events.emit('counter', 'treevu.heartbeats', 1);
        break;
      case 'error':
        this.events.emit('counter', 'treevu.server_errors', 1);
        break;
      default:
        break;
    }
    this.wake();
  }

  // Resolves once `done()` holds; rejects (failing the VU) on a close or after `seconds`.
  until(done, seconds, what) {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.wake = () => {};
        reject(new Error(`timeout waiting for ${what}`));
      }, seconds * 1000);
      this.wake = () => {
        if (done()) {
          clearTimeout(timer);
          this.wake = () => {};
          resolve();
        } else if (this.closed) {
          clearTimeout(timer);
          this.wake = () => {};
          reject(new Error(`${this.closed} before ${what}`));
        }
      };
      this.wake();
    });
  }
}

// async functions: Artillery fails the VU (errors.<message>) when the promise rejects.
async function authenticate(context, events) {
  const inbox = new Inbox(context.ws, events);
  context.inbox = inbox;
  const sent = Date.now();
  context.ws.send(JSON.stringify({ type: 'auth', token: context.vars.token }));
  await inbox.until(() => inbox.welcome !== null, Number(context.vars.welcomeSeconds), 'welcome');
  events.emit('histogram', 'treevu.welcome_ms', Date.now() - sent);
}

async function receiveAndAck(context, events) {
  const inbox = context.inbox;
  const wanted = Number(context.vars.notifications);
  await inbox.until(() => inbox.seen.size >= wanted, Number(context.vars.holdSeconds), 'notifications');
}
