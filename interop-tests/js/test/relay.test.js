'use strict';
// Dynamic nodes and the anonymous relay through rhea (SPEC §2,
// docs/ADDRESSES.md): request/response through a dynamic reply queue and an
// anonymous-relay sender, relaying to several addresses, the relay's refusals.

const { test } = require('node:test');
const assert = require('node:assert/strict');

const { withBroker, DEFAULT_CONFIG } = require('../lib/broker');
const {
  Inbox, close, closeLink, connect, fetchAll, openLink, queueName, sendOne,
} = require('../lib/amqp');

const NO_AUTO_CREATE = `${DEFAULT_CONFIG}\n[broker]\nauto-create = false\n`;

// An anonymous-relay sender: a target with no address.
const openRelay = (conn) => openLink(conn, 'sender', { target: {} });

async function dynamicReceiver(conn) {
  const receiver = await openLink(conn, 'receiver', { source: { dynamic: true }, credit_window: 0 });
  return { receiver, inbox: new Inbox(receiver), address: receiver.remote.attach.source.address };
}

test('the Open offers ANONYMOUS-RELAY', () => withBroker(async (broker) => {
  const conn = await connect(broker);
  try {
    const caps = [].concat(conn.remote.open.offered_capabilities || []).map(String);
    assert.ok(caps.includes('ANONYMOUS-RELAY'), JSON.stringify(caps));
  } finally {
    await close(conn);
  }
}));

test('request/response: dynamic reply queue, reply through the anonymous relay', () => withBroker(async (broker) => {
  const service = queueName('service');
  const requester = await connect(broker);
  const responder = await connect(broker);
  try {
    const replies = await dynamicReceiver(requester);
    assert.match(replies.address || '', /^dynamic-/);
    const requests = await openLink(requester, 'sender', { target: { address: service } });
    assert.equal((await sendOne(requests, { body: 'ping', reply_to: replies.address, correlation_id: 'req-1' })).outcome,
      'accepted');

    const incoming = await openLink(responder, 'receiver', { source: { address: service }, credit_window: 0 });
    const inbox = new Inbox(incoming);
    incoming.add_credit(1);
    const req = (await inbox.next()).message;
    assert.deepEqual([req.body, req.reply_to], ['ping', replies.address]);
    const relay = await openRelay(responder);
    const { outcome, error } = await sendOne(relay, { to: req.reply_to, correlation_id: req.correlation_id, body: 'pong' });
    assert.equal(outcome, 'accepted', JSON.stringify(error));

    replies.receiver.add_credit(1);
    const reply = (await replies.inbox.next()).message;
    assert.deepEqual([reply.body, reply.correlation_id, reply.to], ['pong', 'req-1', replies.address]);
  } finally {
    await close(requester);
    await close(responder);
  }
}));

test('anonymous relay to several addresses', () => withBroker(async (broker) => {
  const q = queueName('relay');
  const topic = `${q}-t`;
  const conn = await connect(broker);
  try {
    const subs = [];
    for (let i = 0; i < 2; i++) {
      const r = await openLink(conn, 'receiver', { source: { address: `topic://${topic}` }, credit_window: 0 });
      const inbox = new Inbox(r);
      r.add_credit(5);
      subs.push(inbox);
    }
    const relay = await openRelay(conn);
    const sends = [[`${q}-a`, 'm0'], [`queue://${q}-b`, 'm1'], [`/queues/${q}-c`, 'm2'],
      [`topic://${topic}`, 'm3'], [`${q}-a`, 'm4']];
    for (const [to, body] of sends) {
      const { outcome, error } = await sendOne(relay, { to, body });
      assert.equal(outcome, 'accepted', `${to}: ${JSON.stringify(error)}`);
    }
    for (const inbox of subs) assert.equal((await inbox.next()).message.body, 'm3');
  } finally {
    await close(conn);
  }
  assert.deepEqual((await fetchAll(broker, `${q}-a`)).map((m) => m.body), ['m0', 'm4']);
  assert.deepEqual((await fetchAll(broker, `${q}-b`)).map((m) => m.body), ['m1']);
  assert.deepEqual((await fetchAll(broker, `${q}-c`)).map((m) => m.body), ['m2']);
}));

test('relay: a message without `to` is rejected amqp:invalid-field, the link goes on', () => withBroker(async (broker) => {
  const q = queueName('no-to');
  const conn = await connect(broker);
  try {
    const relay = await openRelay(conn);
    const { outcome, error } = await sendOne(relay, { body: 'nowhere' });
    assert.equal(outcome, 'rejected');
    assert.equal(error && error.condition, 'amqp:invalid-field', JSON.stringify(error));
    assert.equal((await sendOne(relay, { to: q, body: 'somewhere' })).outcome, 'accepted');
  } finally {
    await close(conn);
  }
  assert.deepEqual((await fetchAll(broker, q)).map((m) => m.body), ['somewhere']);
}));

test('relay with auto-create off: unknown `to` is rejected amqp:not-found; DLQ exists', () => withBroker(async (broker) => {
  const q = queueName('unknown-to');
  const conn = await connect(broker);
  try {
    const relay = await openRelay(conn);
    for (const to of [q, `queue://${q}`, `topic://${q}`]) {
      const { outcome, error } = await sendOne(relay, { to, body: 'x' });
      assert.equal(outcome, 'rejected', to);
      assert.equal(error && error.condition, 'amqp:not-found', `${to}: ${JSON.stringify(error)}`);
    }
    assert.equal((await sendOne(relay, { to: 'DLQ', body: 'to the DLQ' })).outcome, 'accepted');
  } finally {
    await close(conn);
  }
  assert.deepEqual((await fetchAll(broker, 'DLQ')).map((m) => m.body), ['to the DLQ']);
}, NO_AUTO_CREATE));

test('a dynamic node goes with its link (auto-create off)', () => withBroker(async (broker) => {
  const conn = await connect(broker);
  try {
    const { receiver, inbox, address } = await dynamicReceiver(conn);
    const relay = await openRelay(conn);
    assert.equal((await sendOne(relay, { to: address, body: 'r' })).outcome, 'accepted');
    receiver.add_credit(1);
    assert.equal((await inbox.next()).message.body, 'r');
    await closeLink(receiver);
    const { outcome, error } = await sendOne(relay, { to: address, body: 'too late' });
    assert.equal(outcome, 'rejected');
    assert.equal(error && error.condition, 'amqp:not-found', JSON.stringify(error));
  } finally {
    await close(conn);
  }
}, NO_AUTO_CREATE));
