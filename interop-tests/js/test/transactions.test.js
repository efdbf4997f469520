'use strict';
// Transactions (SPEC §7; AMQP 1.0 part 4, local transactions) through rhea.
//
// rhea 3.0.5 has no transaction API, and three things a transactional client
// needs are beyond its public API; this file adds them (see `coordinator`
// below), without touching what the other test files see (node --test runs
// each file in a process of its own):
// - a coordinator target: rhea encodes every target as `target` (0x29), so
//   the attach's target is replaced by a described `coordinator` (0x30) list
//   before the attach goes out, and the broker's echo (which rhea would drop
//   with "Unknown terminus") is kept;
// - control messages: an amqp-value section holding a described type cannot
//   be built through rhea's message encoder (it overwrites the value's
//   descriptor with the section's), so declare (0x31) and discharge (0x32)
//   are encoded by hand and sent as raw bytes (sender.send(bytes, tag, 0));
// - a transfer's `state`: rhea never sets it, so a transactional post's
//   transactional-state (0x34) is put into that transfer frame by wrapping
//   its session's output. Dispositions need nothing: delivery.update(settled,
//   state) takes any state.
// rhea reports states it does not know (declared 0x33, transactional-state
// 0x34) as "unrecognised outcome" and keeps them undecoded: they are decoded
// here instead ({ declared: txnId } / { txnId, outcome }).

const { test } = require('node:test');
const assert = require('node:assert/strict');
const crypto = require('node:crypto');

const { withBroker } = require('../lib/broker');
const {
  Inbox, close, closeLink, connect, drain, fetchAll, openLink, queueName, rhea, roundTrip, sendAll,
  withTimeout,
} = require('../lib/amqp');
// The module rhea's links use to read a terminus (the same object).
const terminus = require('rhea/lib/terminus.js');

const { types } = rhea;
const COORDINATOR = 0x30;
const DECLARE = 0x31;
const DISCHARGE = 0x32;
const DECLARED = 0x33;
const TRANSACTIONAL_STATE = 0x34;
const LOCAL_TRANSACTIONS = 'amqp:local-transactions';

const described = (code, fields) => types.described(types.wrap_ulong(code), types.wrap_list(fields));
const descriptorOf = (v) => (v && v.descriptor ? Number(v.descriptor.value) : undefined);
const count = (m) => m.delivery_count || 0;

// States and the coordinator terminus rhea does not decode.
const unwrapOutcome = rhea.message.unwrap_outcome;
rhea.message.unwrap_outcome = function unwrap(state) {
  switch (descriptorOf(state)) {
    case DECLARED:
      return { declared: types.unwrap(state.value[0]) };
    case TRANSACTIONAL_STATE: {
      const [txnId, outcome] = state.value;
      return {
        txnId: types.unwrap(txnId),
        outcome: descriptorOf(outcome) === undefined ? undefined : unwrapOutcome(outcome),
      };
    }
    default:
      return unwrapOutcome(state);
  }
};
const unwrapTerminus = terminus.unwrap;
terminus.unwrap = function unwrap(field) {
  if (descriptorOf(field) === COORDINATOR) {
    const caps = types.unwrap(field.value[0]);
    return { coordinator: true, capabilities: [].concat(caps == null ? [] : caps) };
  }
  return unwrapTerminus(field);
};

// The name of an outcome rhea decoded ('accepted', 'rejected', ...).
const outcomeName = (o) => (o && o.constructor && o.constructor.composite_type) || o;

// transactional-state{txn-id, outcome} for a disposition or a transfer.
function transactionalState(txnId, outcome) {
  return described(TRANSACTIONAL_STATE,
    outcome === undefined ? [types.wrap_binary(txnId)] : [types.wrap_binary(txnId), outcome]);
}

// An amqp-value section holding `value`, as the bytes of a message.
function amqpValue(value) {
  const w = new types.Writer();
  w.write(value);
  return Buffer.concat([Buffer.from([0x00, 0x53, 0x77]), w.toBuffer()]);
}

// Resolves with `delivery` once the broker settled it (its remote_state).
function settledBy(link, delivery, what) {
  return withTimeout(new Promise((resolve) => {
    if (delivery.remote_settled) {
      resolve(delivery.remote_state);
      return;
    }
    const h = (ctx) => {
      if (ctx.delivery !== delivery) return;
      link.removeListener('settled', h);
      resolve(delivery.remote_state);
    };
    link.on('settled', h);
  }), what);
}

// Lets `session`'s transfers carry a state: `states.set(deliveryId, state)`
// before the transfer is written (rhea writes it on the next tick).
function transferStates(session) {
  if (session.transferStates) return session.transferStates;
  const states = new Map();
  const output = session.output;
  session.output = function withState(frame, payload) {
    const id = frame.constructor.descriptor && frame.constructor.descriptor.numeric === 0x14
      ? frame.delivery_id : undefined;
    if (id !== undefined && states.has(id)) {
      // Fields up to `state` (the 8th); rhea leaves the unset ones out.
      for (let i = 0; i < 7; i++) if (frame.value[i] === undefined) frame.value[i] = types.Null();
      frame.value[7] = states.get(id);
      if (!frame.more) states.delete(id);
    }
    return output.call(this, frame, payload);
  };
  session.transferStates = states;
  return states;
}

// A coordinator link on `conn`: declare(), discharge(txnId, fail) resolve
// with the broker's answer {state, error}.
async function coordinator(conn) {
  const link = conn.open_sender({ name: `txn-ctrl-${crypto.randomBytes(4).toString('hex')}` });
  link.local.attach.target = described(COORDINATOR, [
    types.wrap_array([LOCAL_TRANSACTIONS], types.Sym8.typecode),
  ]);
  await withTimeout(new Promise((resolve, reject) => {
    link.once('sendable', resolve);
    link.once('sender_close', () => reject(Object.assign(new Error('coordinator refused'), { condition: link.error })));
    conn.failure.catch(reject);
  }), 'coordinator attach');
  const control = async (value, what) => {
    const d = link.send(amqpValue(value), undefined, 0);
    const state = await settledBy(link, d, what);
    return { state, error: state && state.error };
  };
  return {
    link,
    declare: () => control(described(DECLARE, []), 'declare'),
    discharge: (txnId, fail) => control(
      described(DISCHARGE, [types.wrap_binary(txnId), fail ? types.True() : types.False()]),
      `discharge (fail=${fail})`,
    ),
    // Declares and checks the answer: resolves with the txn-id.
    async open() {
      const { state } = await this.declare();
      assert.ok(state && Buffer.isBuffer(state.declared) && state.declared.length > 0,
        `declare answered ${JSON.stringify(state)}`);
      return state.declared;
    },
  };
}

// Sends `message` in transaction `txnId` on `sender`; resolves with the
// broker's answer (remote_state), which must be settled.
function post(sender, message, txnId) {
  const d = sender.send(message);
  transferStates(sender.session).set(d.id, transactionalState(txnId));
  return settledBy(sender, d, `answer to the post of ${JSON.stringify(message.body)}`);
}

function assertPostAccepted(answer, txnId) {
  assert.ok(answer && Buffer.isBuffer(answer.txnId), `not a transactional-state: ${JSON.stringify(answer)}`);
  assert.ok(answer.txnId.equals(txnId), 'answered with another txn-id');
  assert.equal(outcomeName(answer.outcome), 'accepted');
}

// A disposition transactional-state{txn-id, accepted} for a received delivery.
function acceptIn(delivery, txnId, settled) {
  delivery.update(settled, transactionalState(txnId, rhea.message.accepted().described()));
}

async function manualReceiver(conn, address) {
  const receiver = await openLink(conn, 'receiver', {
    source: { address }, credit_window: 0, autoaccept: false,
  });
  return { receiver, inbox: new Inbox(receiver) };
}

async function take(inbox, n) {
  const out = [];
  for (let i = 0; i < n; i++) out.push(await inbox.next(`message ${i + 1} of ${n}`));
  return out;
}

// ---------------------------------------------------------------------------

test('declare → declared with a txn-id; posts appear at commit; a rolled back one never', () => withBroker(async (broker) => {
  const q = queueName('txn-post');
  const conn = await connect(broker);
  try {
    const coord = await coordinator(conn);
    assert.deepEqual(coord.link.remote.attach.target, { coordinator: true, capabilities: [LOCAL_TRANSACTIONS] },
      'the broker should echo the coordinator target');
    const txn = await coord.open();
    const other = await coord.open();
    assert.ok(!txn.equals(other), 'two open transactions got one txn-id');

    const sender = await openLink(conn, 'sender', { target: { address: q } });
    // Transactional work may come on any session of the connection.
    const session = conn.create_session();
    session.begin();
    const second = session.open_sender({ target: { address: q } });
    await withTimeout(new Promise((r) => second.once('sendable', r)), 'second session sender');

    assertPostAccepted(await post(sender, { body: 'a' }, txn), txn);
    assertPostAccepted(await post(sender, { body: 'gone' }, other), other);
    assertPostAccepted(await post(second, { body: 'b' }, txn), txn);
    assert.deepEqual(await fetchAll(broker, q), [], 'posts visible before the commit');

    const rollback = await coord.discharge(other, true);
    assert.equal(outcomeName(rollback.state), 'accepted');
    assert.deepEqual(await fetchAll(broker, q), []);
    const commit = await coord.discharge(txn, false);
    assert.equal(outcomeName(commit.state), 'accepted');
    const got = await fetchAll(broker, q);
    assert.deepEqual(got.map((m) => [m.body, count(m)]), [['a', 0], ['b', 0]]);
  } finally {
    await close(conn);
  }
}));

test('transactional accept then rollback: the message comes back first with delivery-count 1', () => withBroker(async (broker) => {
  const q = queueName('txn-accept-rollback');
  const conn = await connect(broker);
  try {
    await sendAll(conn, q, [{ body: 'm0' }, { body: 'm1' }, { body: 'm2' }]);
    const coord = await coordinator(conn);
    const txn = await coord.open();
    const r = await manualReceiver(conn, q);
    r.receiver.add_credit(1);
    const [m0] = await take(r.inbox, 1);
    assert.deepEqual([m0.message.body, count(m0.message)], ['m0', 0]);
    acceptIn(m0.delivery, txn, false);
    await roundTrip(conn, q);
    const settled = settledBy(r.receiver, m0.delivery, 'the broker settling the rolled back delivery');
    const rollback = await coord.discharge(txn, true);
    assert.equal(outcomeName(rollback.state), 'accepted');
    await settled;
    r.receiver.add_credit(3);
    const again = await take(r.inbox, 3);
    assert.deepEqual(again.map((g) => [g.message.body, count(g.message)]), [['m0', 1], ['m1', 0], ['m2', 0]]);
    again.forEach((g) => g.delivery.accept());
    assert.deepEqual(await drain(r.receiver, 10), []);
  } finally {
    await close(conn);
  }
}));

test('a transactional accept the client settled holds the message past its link: a rollback returns it, a commit removes it', () => withBroker(async (broker) => {
  const q = queueName('txn-accept-settled');
  const conn = await connect(broker);
  const watcherConn = await connect(broker);
  try {
    await sendAll(conn, q, [{ body: 'm0' }, { body: 'm1' }]);
    const coord = await coordinator(conn);
    const txn = await coord.open();
    const r = await manualReceiver(conn, q);
    r.receiver.add_credit(1);
    const [m0] = await take(r.inbox, 1);
    acceptIn(m0.delivery, txn, true);
    await closeLink(r.receiver); // m0 settled by the client, locked to txn
    const watcher = await manualReceiver(watcherConn, q);
    await drain(watcher.receiver, 10); // once completed, the Inbox has all it was given
    assert.deepEqual(watcher.inbox.items.map((i) => i.message.body), ['m1'],
      'a message accepted in an open transaction went to another consumer');
    const [m1] = watcher.inbox.items.splice(0);
    m1.delivery.accept();

    assert.equal(outcomeName((await coord.discharge(txn, true)).state), 'accepted');
    watcher.receiver.add_credit(1);
    const [back] = await take(watcher.inbox, 1);
    assert.deepEqual([back.message.body, count(back.message)], ['m0', 1]);

    // Now accepted (settled) in a transaction on the watcher's connection,
    // its link detached, and committed: gone.
    const coord2 = await coordinator(watcherConn);
    const txn2 = await coord2.open();
    acceptIn(back.delivery, txn2, true);
    await closeLink(watcher.receiver);
    assert.deepEqual(await fetchAll(broker, q), [], 'returned by the detach before the commit');
    assert.equal(outcomeName((await coord2.discharge(txn2, false)).state), 'accepted');
    assert.deepEqual(await fetchAll(broker, q), []);
  } finally {
    await close(conn);
    await close(watcherConn);
  }
}));

test('discharge of an unknown txn-id → rejected amqp:transaction:unknown-id', () => withBroker(async (broker) => {
  const conn = await connect(broker);
  const other = await connect(broker);
  try {
    const coord = await coordinator(conn);
    const made = await coord.discharge(Buffer.from('no-such-txn'), false);
    assert.equal(outcomeName(made.state), 'rejected');
    assert.equal(made.error && made.error.condition, 'amqp:transaction:unknown-id', JSON.stringify(made.error));

    // Already discharged, and another connection's: unknown here too.
    const done = await coord.open();
    assert.equal(outcomeName((await coord.discharge(done, false)).state), 'accepted');
    const twice = await coord.discharge(done, true);
    assert.equal(outcomeName(twice.state), 'rejected');
    assert.equal(twice.error && twice.error.condition, 'amqp:transaction:unknown-id');
    const foreignCoord = await coordinator(other);
    const foreign = await foreignCoord.open();
    const elsewhere = await coord.discharge(foreign, false);
    assert.equal(outcomeName(elsewhere.state), 'rejected');
    assert.equal(elsewhere.error && elsewhere.error.condition, 'amqp:transaction:unknown-id');
    assert.equal(outcomeName((await foreignCoord.discharge(foreign, true)).state), 'accepted');
  } finally {
    await close(conn);
    await close(other);
  }
}));
