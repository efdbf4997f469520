'use strict';
// The store through rhea: durable messages survive a broker crash (SIGKILL)
// in order and nothing else does; a durable subscription keeps its messages.

const { test } = require('node:test');
const assert = require('node:assert/strict');

const { withBroker } = require('../lib/broker');
const { close, connect, fetchAll, queueName, sendAll } = require('../lib/amqp');

test('durable messages survive kill -9 in order; transient ones do not', () => withBroker(async (broker) => {
  const q = queueName('durable');
  const conn = await connect(broker);
  try {
    const messages = [
      ...Array.from({ length: 200 }, (_, i) => ({ body: `d${i}`, durable: true })),
      { body: 'transient', durable: false },
      { body: 'last', durable: true, priority: 9 },
    ];
    const { outcomes } = await sendAll(conn, q, messages);
    assert.deepEqual(outcomes, Array(messages.length).fill('accepted'));
  } finally {
    await close(conn);
  }
  await broker.crashAndRestart();
  const got = await fetchAll(broker, q, { credit: 500 });
  assert.deepEqual(
    got.map((m) => m.body),
    ['last', ...Array.from({ length: 200 }, (_, i) => `d${i}`)],
  );
  assert.ok(got.every((m) => m.durable === true));
  assert.ok(got.every((m) => !m.first_acquirer), 'recovered messages may have been seen');
  await broker.waitForLog(/store recovered .*messages=201/);
}));

test('a durable subscription keeps its messages across kill -9', () => withBroker(async (broker) => {
  const topic = `topic://${queueName('durable-topic')}`;
  const source = { address: topic, durable: 2, expiry_policy: 'never' };
  const subscribe = () => connect(broker, { container_id: `${topic}-client` });
  const conn = await subscribe();
  try {
    const receiver = conn.open_receiver({ name: 'sub', source, credit_window: 0 });
    await new Promise((r) => receiver.once('receiver_open', r));
    receiver.detach(); // away, not unsubscribed
    await new Promise((r) => receiver.once('receiver_close', r));
  } finally {
    await close(conn);
  }
  const pub = await connect(broker);
  try {
    await sendAll(pub, topic, [0, 1, 2].map((i) => ({ body: `t${i}`, durable: true })));
  } finally {
    await close(pub);
  }
  await broker.crashAndRestart();
  const again = await subscribe();
  try {
    const receiver = again.open_receiver({ name: 'sub', source, credit_window: 10 });
    const bodies = [];
    await new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`got only ${JSON.stringify(bodies)}`)), 10000);
      receiver.on('message', (ctx) => {
        bodies.push(ctx.message.body);
        if (bodies.length === 3) {
          clearTimeout(timer);
          resolve();
        }
      });
    });
    assert.deepEqual(bodies, ['t0', 't1', 't2']);
  } finally {
    await close(again);
  }
}));
