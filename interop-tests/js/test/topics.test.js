'use strict';
// Topics through rhea (SPEC §2, docs/ADDRESSES.md "Topics"): a copy per
// subscriber, durable subscriptions that outlive their subscriber's absence and
// end with a closing detach.

const { test } = require('node:test');
const assert = require('node:assert/strict');

const { withBroker } = require('../lib/broker');
const {
  Inbox, close, closeLink, connect, drain, fetchAll, openLink, queueName, sendAll, withTimeout,
} = require('../lib/amqp');

const durableSource = (address) => ({ address, durable: 2, expiry_policy: 'never' });

async function subscribe(conn, source, options = {}) {
  const receiver = await openLink(conn, 'receiver', {
    source, credit_window: 0, autoaccept: true, ...options,
  });
  return { receiver, inbox: new Inbox(receiver) };
}

async function take(inbox, n) {
  const out = [];
  for (let i = 0; i < n; i++) out.push((await inbox.next()).message);
  return out;
}

async function publish(broker, address, bodies, target = {}) {
  const conn = await connect(broker);
  try {
    const { outcomes } = await sendAll(conn, address, bodies.map((body) => ({ body })), { target });
    assert.deepEqual(outcomes, bodies.map(() => 'accepted'));
  } finally {
    await close(conn);
  }
}

test('every subscriber gets a copy', () => withBroker(async (broker) => {
  const topic = `topic://${queueName('copies')}`;
  const conns = await Promise.all([0, 1, 2].map(() => connect(broker)));
  try {
    const subs = [];
    for (const c of conns) {
      const s = await subscribe(c, { address: topic });
      s.receiver.add_credit(10);
      subs.push(s);
    }
    await publish(broker, topic, ['m0', 'm1', 'm2']);
    for (const s of subs) {
      const got = await take(s.inbox, 3);
      assert.deepEqual(got.map((m) => [m.body, m.delivery_count || 0]), [['m0', 0], ['m1', 0], ['m2', 0]]);
    }
  } finally {
    for (const c of conns) await close(c);
  }
}));

test('topic capability on a plain name, and a plain name of an existing topic', () => withBroker(async (broker) => {
  const name = queueName('capability');
  const conn = await connect(broker);
  try {
    const a = await subscribe(conn, { address: name, capabilities: ['topic'] });
    const b = await subscribe(conn, { address: name }); // the topic exists now
    a.receiver.add_credit(5);
    b.receiver.add_credit(5);
    await publish(broker, name, ['x', 'y'], { capabilities: ['topic'] });
    await publish(broker, name, ['z']);
    assert.deepEqual((await take(a.inbox, 3)).map((m) => m.body), ['x', 'y', 'z']);
    assert.deepEqual((await take(b.inbox, 3)).map((m) => m.body), ['x', 'y', 'z']);
  } finally {
    await close(conn);
  }
}));

for (const away of ['detach closed=false', 'connection closed', 'socket destroyed']) {
  test(`durable subscription keeps what was published while away (${away}); close removes it`, () => withBroker(async (broker) => {
    const topic = `topic://${queueName('durable')}`;
    const cid = queueName('durable-client');
    let conn = await connect(broker, { container_id: cid });
    const sub = await subscribe(conn, durableSource(topic), { name: 'sub' });
    assert.equal(sub.receiver.remote.attach.source.durable, 2, 'the broker did not echo the durable source');
    sub.receiver.add_credit(10);
    await publish(broker, topic, ['p0']);
    assert.equal((await sub.inbox.next()).message.body, 'p0');
    if (away === 'detach closed=false') {
      await withTimeout(new Promise((resolve) => {
        sub.receiver.once('receiver_close', resolve);
        sub.receiver.detach();
      }), 'detach');
      await close(conn);
    } else if (away === 'connection closed') {
      await close(conn);
    } else {
      conn.closing = true;
      conn.on('disconnected', () => {});
      conn.socket.destroy(new Error('simulated crash'));
      await broker.waitForLog(new RegExp(`connection ended container="${cid}"`));
    }
    await publish(broker, topic, ['p1', 'p2', 'p3']);

    conn = await connect(broker, { container_id: cid });
    try {
      const back = await openLink(conn, 'receiver', { name: 'sub', source: durableSource(topic), credit_window: 0 });
      const got = await drain(back, 10);
      assert.deepEqual(got.map((m) => [m.body, m.delivery_count || 0]), [['p1', 0], ['p2', 0], ['p3', 0]]);
      await closeLink(back); // closed=true: unsubscribe
    } finally {
      await close(conn);
    }
    await publish(broker, topic, ['p4']); // nobody subscribed: dropped
    conn = await connect(broker, { container_id: cid });
    try {
      const again = await openLink(conn, 'receiver', { name: 'sub', source: durableSource(topic), credit_window: 0 });
      assert.deepEqual(await drain(again, 10), [], 'the closed subscription kept messages');
      await closeLink(again);
    } finally {
      await close(conn);
    }
  }));
}

test('durable subscription: unsettled messages come back when the subscriber returns', () => withBroker(async (broker) => {
  const topic = `topic://${queueName('durable-unsettled')}`;
  const cid = queueName('client');
  let conn = await connect(broker, { container_id: cid });
  const sub = await subscribe(conn, durableSource(topic), { name: 'sub', autoaccept: false });
  sub.receiver.add_credit(2);
  await publish(broker, topic, ['p0', 'p1', 'p2']);
  assert.deepEqual((await take(sub.inbox, 2)).map((m) => m.body), ['p0', 'p1']);
  await close(conn); // with 2 unsettled
  conn = await connect(broker, { container_id: cid });
  try {
    const back = await openLink(conn, 'receiver', { name: 'sub', source: durableSource(topic), credit_window: 0 });
    const got = await drain(back, 10);
    assert.deepEqual(got.map((m) => [m.body, m.delivery_count || 0]), [['p0', 1], ['p1', 1], ['p2', 0]]);
    await closeLink(back);
  } finally {
    await close(conn);
  }
}));

test('non-durable subscription ends with its link', () => withBroker(async (broker) => {
  const topic = `topic://${queueName('volatile')}`;
  const cid = queueName('client');
  let conn = await connect(broker, { container_id: cid });
  const sub = await subscribe(conn, { address: topic }, { name: 'sub' });
  sub.receiver.add_credit(1);
  await publish(broker, topic, ['p0']);
  assert.equal((await sub.inbox.next()).message.body, 'p0');
  await close(conn);
  await publish(broker, topic, ['while away']);
  conn = await connect(broker, { container_id: cid });
  try {
    const back = await openLink(conn, 'receiver', { name: 'sub', source: { address: topic }, credit_window: 0 });
    assert.deepEqual(await drain(back, 10), [], 'a non-durable subscription outlived its link');
  } finally {
    await close(conn);
  }
}));

test('rejected on a subscription: DLQ, original address the topic; the other copy is unaffected', () => withBroker(async (broker) => {
  const name = queueName('reject-sub');
  const topic = `topic://${name}`;
  const conn = await connect(broker);
  try {
    const keep = await subscribe(conn, { address: topic });
    const rej = await subscribe(conn, { address: topic }, { autoaccept: false });
    keep.receiver.add_credit(1);
    rej.receiver.add_credit(1);
    await publish(broker, topic, ['x']);
    (await rej.inbox.next()).delivery.reject();
    assert.equal((await keep.inbox.next()).message.body, 'x');
  } finally {
    await close(conn);
  }
  const dead = await fetchAll(broker, 'DLQ');
  assert.deepEqual(dead.map((m) => m.body), ['x']);
  assert.equal(dead[0].message_annotations['x-opt-dead-letter-reason'], 'rejected');
  assert.equal(dead[0].message_annotations['x-opt-original-address'], name);
}));
