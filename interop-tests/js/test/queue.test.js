'use strict';
// Queues through rhea: order, settlement modes, outcomes, consumer loss, drain.

const { test } = require('node:test');
const assert = require('node:assert/strict');
const crypto = require('node:crypto');

const rhea = require('rhea');

const { withBroker } = require('../lib/broker');
const {
  Inbox, close, closeLink, connect, drain, openLink, queueName, receiveN, sendAll, withTimeout,
} = require('../lib/amqp');

const N = 1000;

const numbered = (n, prefix = 'm') => Array.from({ length: n }, (_, i) => ({
  body: `${prefix}${i}`, application_properties: { seq: i },
}));

// Checks with a fresh connection that `queue` has nothing left.
async function assertEmpty(broker, queue) {
  const conn = await connect(broker);
  try {
    const receiver = conn.open_receiver({ source: { address: queue }, credit_window: 0 });
    await withTimeout(new Promise((r) => receiver.once('receiver_open', r)), 'receiver open');
    const late = await drain(receiver, 10);
    assert.deepEqual(late.map((m) => m.body), [], 'the queue should be empty');
  } finally {
    await close(conn);
  }
}

test('1000 messages in order, auto-accept', () => withBroker(async (broker) => {
  const q = queueName('auto-accept');
  const conn = await connect(broker);
  try {
    const { outcomes } = await sendAll(conn, q, numbered(N));
    assert.deepEqual(outcomes, Array(N).fill('accepted'));
    const { receiver, got } = await receiveN(conn, q, N); // autoaccept, window 1000
    assert.deepEqual(got.map((g) => g.message.body), numbered(N).map((m) => m.body));
    assert.deepEqual(got.map((g) => g.message.application_properties.seq), [...Array(N).keys()]);
    assert.ok(got.every((g) => (g.message.delivery_count || 0) === 0));
    assert.deepEqual(await drain(receiver), []);
  } finally {
    await close(conn);
  }
  await assertEmpty(broker, q);
}));

test('1000 messages in order, manual accept', () => withBroker(async (broker) => {
  const q = queueName('manual-accept');
  const conn = await connect(broker);
  try {
    await sendAll(conn, q, numbered(N));
    const { got } = await receiveN(conn, q, N, { autoaccept: false, credit_window: 100 });
    assert.deepEqual(got.map((g) => g.message.body), numbered(N).map((m) => m.body));
    for (const g of got) g.delivery.accept();
  } finally {
    await close(conn);
  }
  await assertEmpty(broker, q);
}));

test('1000 messages in order, pre-settled producer and consumer', () => withBroker(async (broker) => {
  const q = queueName('presettled');
  const conn = await connect(broker);
  try {
    await sendAll(conn, q, numbered(N), { presettled: true });
    const { receiver, got } = await receiveN(conn, q, N, { snd_settle_mode: 1 });
    assert.equal(receiver.remote.attach.snd_settle_mode, 1, 'the broker did not agree to pre-settle');
    assert.deepEqual(got.map((g) => g.message.body), numbered(N).map((m) => m.body));
    assert.ok(got.every((g) => g.delivery.remote_settled), 'deliveries should arrive settled');
  } finally {
    await close(conn);
  }
  await assertEmpty(broker, q);
}));

test('1 MiB message', () => withBroker(async (broker) => {
  const q = queueName('large');
  const conn = await connect(broker);
  try {
    const big = crypto.randomBytes(1 << 20);
    const { outcomes } = await sendAll(conn, q, [
      { body: rhea.message.data_section(big) }, { body: 'after' },
    ]);
    assert.deepEqual(outcomes, ['accepted', 'accepted']);
    const { got } = await receiveN(conn, q, 2);
    assert.equal(got[0].message.body.typecode, 0x75);
    assert.ok(Buffer.compare(got[0].message.body.content, big) === 0, '1 MiB body altered');
    assert.equal(got[1].message.body, 'after');
  } finally {
    await close(conn);
  }
}));

test('released message comes back first in line', () => withBroker(async (broker) => {
  const q = queueName('release');
  const conn = await connect(broker);
  try {
    await sendAll(conn, q, [{ body: 'a' }, { body: 'b' }, { body: 'c' }]);
    const receiver = conn.open_receiver({ source: { address: q }, credit_window: 0, autoaccept: false });
    const inbox = new Inbox(receiver);
    receiver.add_credit(1);
    let { message, delivery } = await inbox.next();
    assert.equal(message.body, 'a');
    assert.equal(message.delivery_count || 0, 0);
    assert.equal(!!message.first_acquirer, true);
    delivery.release(); // `released`
    receiver.add_credit(1);
    ({ message, delivery } = await inbox.next());
    assert.equal(message.body, 'a', 'the released message should be delivered first');
    assert.equal(message.delivery_count || 0, 0, 'released is no delivery attempt');
    assert.equal(!!message.first_acquirer, false);
    delivery.accept();
    receiver.add_credit(2);
    for (const body of ['b', 'c']) {
      ({ message, delivery } = await inbox.next());
      assert.equal(message.body, body);
      delivery.accept();
    }
  } finally {
    await close(conn);
  }
  await assertEmpty(broker, q);
}));

test('modified delivery-failed increments delivery_count', () => withBroker(async (broker) => {
  const q = queueName('modified');
  const conn = await connect(broker);
  try {
    await sendAll(conn, q, [{ body: 'a' }, { body: 'b' }]);
    const receiver = conn.open_receiver({ source: { address: q }, credit_window: 0, autoaccept: false });
    const inbox = new Inbox(receiver);
    for (let attempt = 0; attempt < 3; attempt++) {
      receiver.add_credit(1);
      const { message, delivery } = await inbox.next();
      assert.deepEqual([message.body, message.delivery_count || 0], ['a', attempt]);
      delivery.modified({ delivery_failed: true });
    }
    receiver.add_credit(1);
    let { message, delivery } = await inbox.next();
    assert.deepEqual([message.body, message.delivery_count], ['a', 3]);
    delivery.modified({ delivery_failed: false, undeliverable_here: false });
    receiver.add_credit(1);
    ({ message, delivery } = await inbox.next());
    assert.deepEqual([message.body, message.delivery_count], ['a', 3],
      'modified without delivery-failed must not count');
    delivery.accept();
    receiver.add_credit(1);
    ({ message, delivery } = await inbox.next());
    assert.deepEqual([message.body, message.delivery_count || 0], ['b', 0]);
    delivery.accept();
  } finally {
    await close(conn);
  }
}));

test('consumer loss: socket destroyed, messages come back in order', () => withBroker(async (broker) => {
  const q = queueName('consumer-loss');
  const held = 5;
  const total = 8;
  const producer = await connect(broker);
  await sendAll(producer, q, numbered(total));
  await close(producer);

  const doomed = await connect(broker);
  doomed.closing = true; // its end is expected
  doomed.on('disconnected', () => {});
  const receiver = doomed.open_receiver({ source: { address: q }, credit_window: 0, autoaccept: false });
  const inbox = new Inbox(receiver);
  receiver.add_credit(held);
  for (let i = 0; i < held; i++) assert.equal((await inbox.next()).message.body, `m${i}`);
  // No detach, no close: like a crash. (Destroying with an error also tells
  // rhea, which then drops its heartbeat timers.)
  doomed.socket.destroy(new Error('simulated crash'));
  await broker.waitForLog(new RegExp(`connection ended container="${doomed.options.container_id}"`));

  const conn = await connect(broker);
  try {
    const { got } = await receiveN(conn, q, total);
    assert.deepEqual(
      got.map((g) => [g.message.body, g.message.delivery_count || 0, !!g.message.first_acquirer]),
      numbered(total).map((m, i) => [m.body, i < held ? 1 : 0, i >= held]),
    );
  } finally {
    await close(conn);
  }
}));

test('drain: credit is used up and the broker reports the drain', () => withBroker(async (broker) => {
  const q = queueName('drain');
  const conn = await connect(broker);
  try {
    await sendAll(conn, q, numbered(3));
    const receiver = conn.open_receiver({ source: { address: q }, credit_window: 0 });
    await withTimeout(new Promise((r) => receiver.once('receiver_open', r)), 'receiver open');
    // Drain with 10 credits: 3 messages, then a flow with the credit used up.
    const got = await drain(receiver, 10);
    assert.deepEqual(got.map((m) => m.body), ['m0', 'm1', 'm2']);
    assert.equal(receiver.credit, 0, 'credit left after drain');
    // Drain an empty queue: completes at once with nothing.
    assert.deepEqual(await drain(receiver, 5), []);
    assert.equal(receiver.credit, 0);
    // The link still works afterwards.
    await sendAll(conn, q, [{ body: 'later' }]);
    const inbox = new Inbox(receiver);
    receiver.add_credit(1);
    assert.equal((await inbox.next()).message.body, 'later');
  } finally {
    await close(conn);
  }
}));

test('competing consumers share a queue', () => withBroker(async (broker) => {
  const q = queueName('competing');
  const c1 = await connect(broker);
  const c2 = await connect(broker);
  try {
    const r1 = c1.open_receiver({ source: { address: q }, credit_window: 0 });
    const r2 = c2.open_receiver({ source: { address: q }, credit_window: 0 });
    const i1 = new Inbox(r1);
    const i2 = new Inbox(r2);
    r1.add_credit(5);
    r2.add_credit(5);
    await sendAll(c1, q, numbered(10));
    const got1 = [];
    const got2 = [];
    for (let i = 0; i < 5; i++) got1.push((await i1.next()).message.application_properties.seq);
    for (let i = 0; i < 5; i++) got2.push((await i2.next()).message.application_properties.seq);
    assert.deepEqual([...got1, ...got2].sort((a, b) => a - b), [...Array(10).keys()]);
    assert.deepEqual(got1, [...got1].sort((a, b) => a - b));
    assert.deepEqual(got2, [...got2].sort((a, b) => a - b));
  } finally {
    await close(c1);
    await close(c2);
  }
}));

for (const kind of ['receiver', 'sender']) {
  test(`unknown address option refused with amqp:invalid-field (${kind})`, () => withBroker(async (broker) => {
    const q = queueName(`bogus-${kind}`);
    const conn = await connect(broker);
    try {
      const terminus = kind === 'sender' ? 'target' : 'source';
      await assert.rejects(openLink(conn, kind, { [terminus]: { address: `${q}?bogus=1` } }), (e) => {
        assert.equal(e.condition && e.condition.condition, 'amqp:invalid-field', JSON.stringify(e.condition));
        assert.match(e.condition.description || '', /bogus/);
        return true;
      });
      // The connection is still usable.
      const { outcomes } = await sendAll(conn, q, [{ body: 'fine' }]);
      assert.deepEqual(outcomes, ['accepted']);
    } finally {
      await close(conn);
    }
  }));
}

test('receiver detached with unsettled messages: they come back in order', () => withBroker(async (broker) => {
  const q = queueName('detach');
  const conn = await connect(broker);
  try {
    await sendAll(conn, q, numbered(4));
    const r1 = conn.open_receiver({ source: { address: q }, credit_window: 0, autoaccept: false });
    const inbox = new Inbox(r1);
    r1.add_credit(2);
    assert.equal((await inbox.next()).message.body, 'm0');
    assert.equal((await inbox.next()).message.body, 'm1');
    await closeLink(r1);
    const { got } = await receiveN(conn, q, 4);
    assert.deepEqual(got.map((g) => [g.message.body, g.message.delivery_count || 0]),
      [['m0', 1], ['m1', 1], ['m2', 0], ['m3', 0]]);
  } finally {
    await close(conn);
  }
}));
