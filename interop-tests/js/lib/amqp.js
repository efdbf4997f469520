'use strict';
// Promise helpers around rhea for the tests. Every wait is bounded.

const crypto = require('node:crypto');
const rhea = require('rhea');

const TIMEOUT_MS = 20000;

function withTimeout(promise, what, ms = TIMEOUT_MS) {
  let timer;
  const t = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${what}`)), ms);
  });
  return Promise.race([promise, t]).finally(() => clearTimeout(timer));
}

// A queue name unique to one test.
function queueName(label) {
  return `${label.replace(/[^A-Za-z0-9_-]+/g, '-')}-${crypto.randomBytes(4).toString('hex')}`;
}

// Connects with a container of its own; resolves once the broker's Open came.
function connect(broker, options = {}) {
  const container = rhea.create_container();
  const conn = container.connect({
    host: broker.host, port: broker.port, reconnect: false, ...options,
  });
  // Errors not expected by a test surface through `conn.failure`.
  conn.failure = new Promise((_, reject) => {
    conn.on('connection_error', (ctx) => {
      const err = ctx.error || ctx.connection.error || {};
      reject(Object.assign(
        new Error(`connection error: ${err.condition} ${err.description || err.message || ''}`),
        { condition: err.condition },
      ));
    });
    conn.on('disconnected', (ctx) => {
      if (!conn.closing) reject(new Error(`disconnected: ${ctx.error || 'no error given'}`));
    });
  });
  conn.failure.catch(() => {});
  return withTimeout(Promise.race([
    new Promise((resolve) => conn.once('connection_open', () => resolve(conn))),
    conn.failure,
  ]), 'connection open');
}

function close(conn) {
  if (!conn || conn.closing) return Promise.resolve();
  conn.closing = true;
  if (!conn.is_open()) {
    conn.close();
    return Promise.resolve();
  }
  return withTimeout(new Promise((resolve) => {
    conn.once('connection_close', resolve);
    conn.once('disconnected', resolve);
    conn.close();
  }), 'connection close');
}

// Opens a link; resolves with it once the broker's attach came back, rejects
// with the link error (ctx.sender/receiver.error) if the broker refused it.
// `setup(link)`, if given, runs as soon as the link exists, before any frame
// of the broker's can reach it (e.g. recordFlows).
function openLink(conn, kind, options, setup) {
  const link = kind === 'sender' ? conn.open_sender(options) : conn.open_receiver(options);
  if (setup) setup(link);
  return withTimeout(new Promise((resolve, reject) => {
    link.once(`${kind}_open`, () => {
      // A refusal is an attach with a null terminus followed by a detach
      // carrying the error: wait for that detach.
      // (rhea gives a null terminus as a Typed Null.)
      const t = link.remote.attach[kind === 'sender' ? 'target' : 'source'];
      if (t != null && !(t.type && t.type.name === 'Null')) resolve(link);
    });
    link.once(`${kind}_error`, () => reject(Object.assign(new Error(`${kind} refused`), { condition: link.error })));
    link.once(`${kind}_close`, () => reject(Object.assign(new Error(`${kind} closed`), { condition: link.error })));
    conn.failure.catch(reject);
  }), `${kind} attach`);
}

// Sends `messages` on a new sender. Unsettled: resolves with the outcome of
// each ('accepted', 'rejected', 'released', 'modified'). Pre-settled: resolves
// once all were handed to the socket.
// Also resolves with `errors`: the condition of each refusal ({condition,
// description}), undefined for the others. `target` adds terminus fields (e.g.
// capabilities); `address` null (with `to` in each message) is the anonymous
// relay.
async function sendAll(conn, address, messages, { presettled = false, target = {} } = {}) {
  const sender = await openLink(conn, 'sender', {
    target: { address, ...target }, snd_settle_mode: presettled ? 1 : 0,
  });
  const outcomes = [];
  const errors = [];
  await withTimeout(new Promise((resolve, reject) => {
    let next = 0;
    const pump = () => {
      while (next < messages.length && sender.sendable()) {
        // {raw: Buffer} sends bytes the test encoded itself.
        const m = messages[next];
        const d = m && Buffer.isBuffer(m.raw) ? sender.send(m.raw, undefined, 0) : sender.send(m);
        d.index = next++;
      }
      if (presettled && next === messages.length) resolve();
    };
    const outcome = (name) => (ctx) => {
      outcomes[ctx.delivery.index] = name;
      errors[ctx.delivery.index] = outcomeError(ctx.delivery);
      if (outcomes.filter((o) => o).length === messages.length) resolve();
    };
    sender.on('sendable', pump);
    sender.on('accepted', outcome('accepted'));
    sender.on('rejected', outcome('rejected'));
    sender.on('released', outcome('released'));
    sender.on('modified', outcome('modified'));
    sender.on('sender_error', () => reject(new Error(`sender error ${JSON.stringify(sender.error)}`)));
    conn.failure.catch(reject);
    pump();
  }), `sending ${messages.length} messages`);
  if (presettled) {
    // Pre-settled transfers are handed to the socket asynchronously: detach
    // after them, so they are on the wire before anything else the test does.
    await closeLink(sender);
  }
  return { sender, outcomes, errors };
}

// The error of a refused delivery's outcome ({condition, description}).
function outcomeError(delivery) {
  const state = delivery.remote_state;
  return state && state.error ? state.error : undefined;
}

// Sends one message on an open sender (waiting for credit first) and
// resolves with {outcome, error} once the broker settled it.
function sendOne(sender, message) {
  return withTimeout(new Promise((resolve, reject) => {
    const go = () => {
      const d = sender.send(message);
      const names = ['accepted', 'rejected', 'released', 'modified'];
      const handlers = names.map((name) => {
        const h = (ctx) => {
          if (ctx.delivery !== d) return;
          names.forEach((n, i) => sender.removeListener(n, handlers[i]));
          resolve({ outcome: name, error: outcomeError(ctx.delivery) });
        };
        sender.on(name, h);
        return h;
      });
    };
    sender.once('sender_error', () => reject(new Error(`sender error ${JSON.stringify(sender.error)}`)));
    if (sender.sendable()) go();
    else sender.once('sendable', go);
  }), 'outcome of one message');
}

// Every message `address` has (up to `credit`), accepted, through a
// connection of its own. Receiver options (e.g. source fields) are merged.
async function fetchAll(broker, address, { source = {}, credit = 100 } = {}) {
  const conn = await connect(broker);
  try {
    const receiver = await openLink(conn, 'receiver', {
      source: { address, ...source }, credit_window: 0,
    });
    return await drain(receiver, credit);
  } finally {
    await close(conn);
  }
}

function closeLink(link) {
  return withTimeout(new Promise((resolve) => {
    link.once(link.is_sender() ? 'sender_close' : 'receiver_close', resolve);
    link.close();
  }), 'link detach');
}

// Opens a receiver and resolves with its first `n` {message, delivery}.
// Options go to open_receiver (credit_window, autoaccept, rcv/snd settle modes).
async function receiveN(conn, address, n, options = {}) {
  const receiver = conn.open_receiver({ source: { address }, ...options });
  const got = [];
  await withTimeout(new Promise((resolve, reject) => {
    receiver.on('message', (ctx) => {
      got.push({ message: ctx.message, delivery: ctx.delivery });
      if (got.length === n) resolve();
    });
    receiver.on('receiver_error', () => reject(new Error(`receiver error ${JSON.stringify(receiver.error)}`)));
    conn.failure.catch(reject);
    if (n === 0) resolve();
  }), `receiving ${n} messages from ${address}`);
  return { receiver, got };
}

// Drains `receiver` (which should have credit) and resolves with the messages
// that arrived before the broker reported the drain complete.
function drain(receiver, credit = 0) {
  const late = [];
  return withTimeout(new Promise((resolve) => {
    const onMessage = (ctx) => late.push(ctx.message);
    receiver.on('message', onMessage);
    receiver.once('receiver_drained', () => {
      receiver.removeListener('message', onMessage);
      receiver.drain = false;
      resolve(late);
    });
    receiver.drain = true;
    if (credit > 0) receiver.add_credit(credit);
    else receiver.drain_credit();
  }), 'drain');
}

module.exports = {
  rhea, TIMEOUT_MS, withTimeout, queueName, connect, close, openLink, closeLink, sendAll,
  receiveN, drain, sendOne, fetchAll, outcomeError,
};

// Messages of a receiver, one at a time: `await inbox.next()` resolves with
// the next {message, delivery}, in arrival order.
class Inbox {
  constructor(receiver) {
    this.items = [];
    this.waiters = [];
    receiver.on('message', (ctx) => {
      const item = { message: ctx.message, delivery: ctx.delivery };
      const w = this.waiters.shift();
      if (w) w(item);
      else this.items.push(item);
    });
  }

  next(what = 'next message') {
    if (this.items.length) return Promise.resolve(this.items.shift());
    return withTimeout(new Promise((resolve) => this.waiters.push(resolve)), what);
  }
}

module.exports.Inbox = Inbox;

// rhea 3.0.5 dispatches `receiver_flow` but keeps no flow frame (it reads only
// drain and credit from it). recordFlows(link) keeps each flow the broker sends
// on the link as `link.remote.flow` (what docs/GROUPS.md's example reads) and
// queues the properties of those that have any: `await
// link.flowProperties.next()` resolves with them in arrival order, and
// `link.flowProperties.items` holds those not taken yet. Call it before the
// broker's flows can arrive (openLink's `setup`).
class FlowProperties {
  constructor(link) {
    this.items = [];
    this.waiters = [];
    const onFlow = link.on_flow;
    const self = this;
    link.on_flow = function recordFlow(frame) {
      this.remote.flow = frame.performative;
      const props = frame.performative.properties;
      if (props) {
        const w = self.waiters.shift();
        if (w) w(props);
        else self.items.push(props);
      }
      return onFlow.call(this, frame);
    };
  }

  next(what = 'next flow with properties') {
    if (this.items.length) return Promise.resolve(this.items.shift());
    return withTimeout(new Promise((resolve) => this.waiters.push(resolve)), what);
  }
}

function recordFlows(link) {
  link.flowProperties = new FlowProperties(link);
  return link;
}

// Resolves once the broker has handled everything `conn` sent before on its
// default session (credit, dispositions): attaches and detaches a sender to
// `address`. rhea writes a session's dispositions and its older links'
// flows ahead of a new link's attach, and the broker handles a connection's
// frames in order.
async function roundTrip(conn, address) {
  const sender = await openLink(conn, 'sender', {
    target: { address }, name: `round-trip-${crypto.randomBytes(4).toString('hex')}`,
  });
  await closeLink(sender);
}

module.exports.recordFlows = recordFlows;
module.exports.roundTrip = roundTrip;
