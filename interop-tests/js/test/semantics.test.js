'use strict';
// Delivery semantics through rhea (SPEC §2-§3, docs/ADDRESSES.md): dead-letters,
// redelivery limits, undeliverable-here, rcv-settle-mode second, expiry,
// priorities, queue limits, max-message-size, address forms and options,
// auto-create, browsing.

const { test } = require('node:test');
const assert = require('node:assert/strict');

const { withBroker, DEFAULT_CONFIG } = require('../lib/broker');
const {
  Inbox, close, closeLink, connect, drain, fetchAll, openLink, queueName, sendAll, sendOne,
  withTimeout,
} = require('../lib/amqp');

const DLQ = 'DLQ';
const REASON = 'x-opt-dead-letter-reason';
const ORIGIN = 'x-opt-original-address';
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const config = (extra) => `${DEFAULT_CONFIG}\n${extra}`;
const count = (m) => m.delivery_count || 0;
const ann = (m, key) => (m.message_annotations || {})[key];

// A receiver with no credit (credit given by hand) and manual settlement,
// open once the broker attached; with an Inbox.
async function manualReceiver(conn, address, options = {}) {
  const { source = {}, ...rest } = options;
  const receiver = await openLink(conn, 'receiver', {
    source: { address, ...source }, credit_window: 0, autoaccept: false, ...rest,
  });
  return { receiver, inbox: new Inbox(receiver) };
}

async function take(inbox, n) {
  const out = [];
  for (let i = 0; i < n; i++) out.push(await inbox.next());
  return out;
}

async function refusal(conn, kind, address) {
  const terminus = kind === 'sender' ? 'target' : 'source';
  let err;
  await assert.rejects(openLink(conn, kind, { [terminus]: { address } }), (e) => {
    err = e.condition || {};
    return true;
  });
  return err;
}

// ---------------------------------------------------------------------------
// Dead-lettering

test('rejected: the message goes to DLQ with the consumer\'s error as reason, and its original address', () => withBroker(async (broker) => {
  const q = queueName('reject');
  const conn = await connect(broker);
  try {
    await sendAll(conn, q, [
      { body: 'bad', subject: 's', application_properties: { k: 7 }, message_annotations: { 'x-custom': 'kept' } },
      { body: 'good' },
    ]);
    const { receiver, inbox } = await manualReceiver(conn, q);
    receiver.add_credit(1);
    const bad = await inbox.next();
    assert.equal(bad.message.body, 'bad');
    bad.delivery.reject({ condition: 'app:bad', description: 'no thanks' });
    receiver.add_credit(1);
    const good = await inbox.next();
    assert.deepEqual([good.message.body, count(good.message)], ['good', 0]);
    good.delivery.accept();
  } finally {
    await close(conn);
  }
  const dead = await fetchAll(broker, DLQ);
  assert.equal(dead.length, 1);
  const m = dead[0];
  assert.deepEqual([m.body, m.subject, m.application_properties], ['bad', 's', { k: 7 }]);
  // The consumer's error is the reason it was dead-lettered.
  assert.equal(ann(m, REASON), 'app:bad');
  assert.equal(ann(m, 'x-opt-dead-letter-description'), 'no thanks');
  assert.equal(ann(m, ORIGIN), q);
  assert.equal(ann(m, 'x-custom'), 'kept', 'the dead-lettered message lost its annotations');
  assert.deepEqual(await fetchAll(broker, q), []);
}));

const MDA_CONFIG = config(`
[[queues]]
pattern = "mda.#"
max-delivery-attempts = 3
`);

// Fails the head message `attempts` times (modified delivery-failed),
// checking delivery_count and first_acquirer; then 'next' must follow.
async function failUntilDeadLettered(conn, address, attempts) {
  const { receiver, inbox } = await manualReceiver(conn, address);
  for (let attempt = 0; attempt < attempts; attempt++) {
    receiver.add_credit(1);
    const { message, delivery } = await inbox.next();
    assert.deepEqual([message.body, count(message), !!message.first_acquirer],
      ['poison', attempt, attempt === 0], `delivery ${attempt + 1}`);
    delivery.modified({ delivery_failed: true });
  }
  receiver.add_credit(1);
  const { message, delivery } = await inbox.next();
  assert.deepEqual([message.body, count(message)], ['next', 0],
    `after ${attempts} failed deliveries the poison message should be gone`);
  delivery.accept();
  assert.deepEqual(await drain(receiver, 10), []);
}

for (const where of ['config', 'option']) {
  test(`max-delivery-attempts (${where}): dead-lettered with the count reached`, () => withBroker(async (broker) => {
    const base = queueName('mda');
    const address = where === 'config' ? `mda.${base}` : base;
    const attempts = where === 'config' ? 3 : 2;
    const dla = where === 'config' ? DLQ : `${base}-dead`;
    const target = where === 'config' ? address
      : `${address}?queue.max-delivery-attempts=2&queue.dead-letter-address=${dla}`;
    const conn = await connect(broker);
    try {
      const { outcomes } = await sendAll(conn, target, [
        { body: 'poison', message_annotations: { 'x-custom': 1 } }, { body: 'next' },
      ]);
      assert.deepEqual(outcomes, ['accepted', 'accepted']);
      await failUntilDeadLettered(conn, address, attempts);
    } finally {
      await close(conn);
    }
    const dead = await fetchAll(broker, dla);
    assert.deepEqual(dead.map((m) => [m.body, m.delivery_count]), [['poison', attempts]]);
    assert.equal(ann(dead[0], REASON), 'max-delivery-attempts exceeded');
    assert.equal(ann(dead[0], ORIGIN), address);
    assert.equal(ann(dead[0], 'x-custom'), 1);
  }, MDA_CONFIG));
}

for (const how of ['rejected', 'max-delivery-attempts']) {
  test(`dead-lettered from the DLQ itself (${how}): the message is not lost`, () => withBroker(async (broker) => {
    // DLQ's own dead-letter address is DLQ; SPEC §2: "so dead-lettering
    // never loses a message".
    const q = queueName('dlq-loop');
    const fail = (d) => (how === 'rejected' ? d.reject() : d.modified({ delivery_failed: true }));
    const conn = await connect(broker);
    try {
      await sendAll(conn, q, [{ body: 'x' }]);
      const src = await manualReceiver(conn, q);
      for (let i = 0; i < (how === 'rejected' ? 1 : 10); i++) {
        src.receiver.add_credit(1);
        fail((await src.inbox.next()).delivery);
      }
      const dlq = await manualReceiver(conn, DLQ);
      dlq.receiver.add_credit(1);
      const g = await dlq.inbox.next();
      assert.equal(g.message.body, 'x');
      fail(g.delivery);
      await closeLink(dlq.receiver);
    } finally {
      await close(conn);
    }
    assert.deepEqual((await fetchAll(broker, DLQ)).map((m) => m.body), ['x'],
      `${how} from the DLQ (its own dead-letter address): the message is gone`);
  }));
}

test('max-delivery-attempts 0 is unlimited', () => withBroker(async (broker) => {
  const q = queueName('mda0');
  const conn = await connect(broker);
  try {
    await sendAll(conn, `${q}?queue.max-delivery-attempts=0`, [{ body: 'again' }]);
    const { receiver, inbox } = await manualReceiver(conn, q);
    for (let attempt = 0; attempt < 12; attempt++) {
      receiver.add_credit(1);
      const { message, delivery } = await inbox.next();
      assert.deepEqual([message.body, count(message)], ['again', attempt]);
      delivery.modified({ delivery_failed: true });
    }
    receiver.add_credit(1);
    const { message, delivery } = await inbox.next();
    assert.deepEqual([message.body, message.delivery_count, !!message.first_acquirer], ['again', 12, false]);
    delivery.accept();
  } finally {
    await close(conn);
  }
  assert.deepEqual(await fetchAll(broker, DLQ), []);
}));

// ---------------------------------------------------------------------------
// Outcomes

for (const failed of [false, true]) {
  test(`modified undeliverable-here${failed ? ' + delivery-failed' : ''}: never to that link, another consumer gets it`, () => withBroker(async (broker) => {
    const q = queueName('undeliverable');
    const c1 = await connect(broker);
    const c2 = await connect(broker);
    try {
      await sendAll(c1, q, [{ body: 'a' }, { body: 'b' }, { body: 'c' }]);
      const r1 = await manualReceiver(c1, q);
      r1.receiver.add_credit(1);
      const a = await r1.inbox.next();
      assert.equal(a.message.body, 'a');
      a.delivery.modified({ delivery_failed: failed, undeliverable_here: true });
      r1.receiver.add_credit(5);
      const rest = await take(r1.inbox, 2);
      assert.deepEqual(rest.map((g) => [g.message.body, count(g.message)]), [['b', 0], ['c', 0]]);
      rest.forEach((g) => g.delivery.accept());
      assert.deepEqual(await drain(r1.receiver), [], 'the link that said undeliverable-here got it again');
      const r2 = await manualReceiver(c2, q);
      r2.receiver.add_credit(1);
      let g = await r2.inbox.next();
      assert.deepEqual([g.message.body, count(g.message), !!g.message.first_acquirer],
        ['a', failed ? 1 : 0, false]);
      g.delivery.release();
      // Released by the other consumer: still never to r1.
      assert.deepEqual(await drain(r1.receiver, 5), []);
      r2.receiver.add_credit(1);
      g = await r2.inbox.next();
      assert.equal(g.message.body, 'a');
      g.delivery.accept();
    } finally {
      await close(c1);
      await close(c2);
    }
  }));
}

test('rcv-settle-mode second: the broker settles the accepted disposition; never redelivered', () => withBroker(async (broker) => {
  const q = queueName('second');
  const conn = await connect(broker);
  try {
    await sendAll(conn, q, [{ body: 'a' }, { body: 'b' }, { body: 'c' }]);
    // autosettle off: the test settles after the broker did.
    const { receiver, inbox } = await manualReceiver(conn, q, { rcv_settle_mode: 1, autosettle: false });
    assert.equal(receiver.remote.attach.rcv_settle_mode, 1, 'the broker did not echo rcv-settle-mode second');
    const settled = [];
    receiver.on('settled', (ctx) => settled.push(ctx.delivery));
    receiver.add_credit(2);
    const [a, b] = await take(inbox, 2);
    assert.deepEqual([a.message.body, b.message.body], ['a', 'b']);
    a.delivery.accept(); // mode second: sent unsettled
    assert.equal(a.delivery.settled, false);
    await withTimeout((async () => {
      while (!settled.includes(a.delivery)) await sleep(5);
    })(), 'the broker settling the accepted delivery');
    assert.equal(a.delivery.remote_state.constructor.composite_type, 'accepted');
    a.delivery.update(true);
    assert.equal(b.delivery.remote_settled, false, 'the broker settled a delivery nobody decided on');
    await closeLink(receiver); // b unsettled: back
  } finally {
    await close(conn);
  }
  const left = await fetchAll(broker, q);
  assert.deepEqual(left.map((m) => [m.body, count(m)]), [['b', 1], ['c', 0]],
    'an accepted message came back, or b did not');
}));

test('rcv-settle-mode second with autosettle: every delivery settled by the broker', () => withBroker(async (broker) => {
  const q = queueName('second-auto');
  const conn = await connect(broker);
  try {
    await sendAll(conn, q, [{ body: 0 }, { body: 1 }, { body: 2 }]);
    const receiver = conn.open_receiver({ source: { address: q }, rcv_settle_mode: 1 }); // autoaccept
    const settled = [];
    await withTimeout(new Promise((resolve) => {
      receiver.on('settled', (ctx) => {
        settled.push(ctx.delivery.remote_state.constructor.composite_type);
        if (settled.length === 3) resolve();
      });
    }), 'three broker settlements');
    assert.deepEqual(settled, ['accepted', 'accepted', 'accepted']);
  } finally {
    await close(conn);
  }
  assert.deepEqual(await fetchAll(broker, q), []);
}));

// ---------------------------------------------------------------------------
// Expiry

test('ttl: an expired message is dropped', () => withBroker(async (broker) => {
  const q = queueName('ttl');
  const conn = await connect(broker);
  try {
    await sendAll(conn, q, [{ body: 'short', ttl: 200 }, { body: 'long', ttl: 60000 }, { body: 'none' }]);
  } finally {
    await close(conn);
  }
  await sleep(300); // just past the short TTL
  assert.deepEqual((await fetchAll(broker, q)).map((m) => m.body), ['long', 'none']);
  assert.deepEqual(await fetchAll(broker, DLQ), []);
}));

test('absolute_expiry_time: past is dropped, the sooner of ttl and expiry wins', () => withBroker(async (broker) => {
  const q = queueName('abs-expiry');
  const conn = await connect(broker);
  let sent;
  try {
    const browser = await openLink(conn, 'receiver', {
      source: { address: q, distribution_mode: 'copy' }, credit_window: 0,
    });
    const now = Date.now();
    await sendAll(conn, q, [
      { body: 'past', absolute_expiry_time: new Date(now - 10000) },
      { body: 'soon', absolute_expiry_time: new Date(now + 500) },
      { body: 'later', absolute_expiry_time: new Date(now + 60000) },
      { body: 'ttl-long-expiry-past', ttl: 60000, absolute_expiry_time: new Date(now - 10000) },
      { body: 'ttl-short-expiry-later', ttl: 500, absolute_expiry_time: new Date(now + 60000) },
    ]);
    sent = Date.now(); // every TTL started before this
    // Right away only 'past' and 'ttl-long-expiry-past' are expired: a browse
    // (nothing acquired) checks.
    const seen = await drain(browser, 10);
    assert.ok(Date.now() < now + 500, 'too slow to check before the short expiries');
    assert.deepEqual(seen.map((m) => m.body), ['soon', 'later', 'ttl-short-expiry-later']);
  } finally {
    await close(conn);
  }
  await sleep(Math.max(0, sent + 600 - Date.now())); // just past the short ones
  assert.deepEqual((await fetchAll(broker, q)).map((m) => m.body), ['later']);
}));

const EXPIRY_CONFIG = config(`
[[queues]]
pattern = "exp.#"
expiry-address = "expired"
`);

for (const where of ['config', 'option']) {
  test(`expired message moves to the expiry address (${where})`, () => withBroker(async (broker) => {
    const base = queueName('expiry');
    const address = where === 'config' ? `exp.${base}` : base;
    const expired = where === 'config' ? 'expired' : `${base}-expired`;
    const target = where === 'config' ? address : `${address}?queue.expiry-address=${expired}`;
    const conn = await connect(broker);
    try {
      await sendAll(conn, target, [
        { body: 'mortal', ttl: 200, message_annotations: { 'x-custom': 'kept' } }, { body: 'keep' },
      ]);
      // No consumer on the queue: its own once-a-second check moves it.
      const { receiver, inbox } = await manualReceiver(conn, expired);
      receiver.add_credit(10);
      const { message, delivery } = await inbox.next('the expired message');
      delivery.accept();
      assert.equal(message.body, 'mortal');
      assert.equal(ann(message, ORIGIN), address);
      assert.equal(ann(message, 'x-custom'), 'kept');
    } finally {
      await close(conn);
    }
    assert.deepEqual((await fetchAll(broker, address)).map((m) => m.body), ['keep']);
  }, EXPIRY_CONFIG));
}

// ---------------------------------------------------------------------------
// Priorities

test('message priority: higher first, FIFO within a priority', () => withBroker(async (broker) => {
  const q = queueName('priority');
  const conn = await connect(broker);
  try {
    const sent = [[4, 'a'], [9, 'b'], [0, 'c'], [9, 'd'], [undefined, 'e'], [7, 'f'], [200, 'g'], [4, 'h'], [0, 'i']];
    await sendAll(conn, q, sent.map(([priority, body]) => (priority === undefined ? { body } : { body, priority })));
  } finally {
    await close(conn);
  }
  // 200 counts as 9; no priority means 4.
  assert.deepEqual((await fetchAll(broker, q)).map((m) => m.body), ['b', 'd', 'g', 'f', 'a', 'e', 'h', 'c', 'i']);
}));

const PRIORITY_WAYS = {
  'link property priority': { properties: { priority: 10 } },
  'link property rabbitmq:priority': { properties: { 'rabbitmq:priority': 10 } },
  '?consumer.priority=10': { suffix: '?consumer.priority=10' },
  'option wins over link property': { suffix: '?consumer.priority=10', properties: { priority: -5 } },
};

for (const [way, opts] of Object.entries(PRIORITY_WAYS)) {
  test(`consumer priority (${way}): the higher one gets messages while it has credit`, () => withBroker(async (broker) => {
    const q = queueName('consumer-priority');
    const conn = await connect(broker);
    try {
      const low = await manualReceiver(conn, q);
      const high = await manualReceiver(conn, q + (opts.suffix || ''),
        opts.properties ? { properties: opts.properties } : {});
      low.receiver.add_credit(3);
      high.receiver.add_credit(3);
      // Same connection: the flows reach the broker before the transfers.
      await sendAll(conn, q, [0, 1, 2, 3, 4].map((i) => ({ body: i })));
      assert.deepEqual((await take(high.inbox, 3)).map((g) => g.message.body), [0, 1, 2]);
      assert.deepEqual((await take(low.inbox, 2)).map((g) => g.message.body), [3, 4]);
    } finally {
      await close(conn);
    }
  }));
}

// ---------------------------------------------------------------------------
// Queue limits and message size

const LIMITS_CONFIG = config(`
[[queues]]
pattern = "len.#"
max-length = 3
overflow = "reject"

[[queues]]
pattern = "bytes.#"
max-bytes = 1000

[[queues]]
pattern = "droplen.#"
max-length = 3
overflow = "drop-oldest"
`);

const FULL = 'amqp:resource-limit-exceeded';

test('max-length with overflow reject: rejected amqp:resource-limit-exceeded', () => withBroker(async (broker) => {
  const address = `len.${queueName('len')}`;
  const conn = await connect(broker);
  try {
    const { outcomes, errors } = await sendAll(conn, address, [0, 1, 2, 3].map((i) => ({ body: i })));
    assert.deepEqual(outcomes, ['accepted', 'accepted', 'accepted', 'rejected']);
    assert.equal(errors[3] && errors[3].condition, FULL, JSON.stringify(errors[3]));
    // Delivered and unsettled messages do not count.
    const { receiver, inbox } = await manualReceiver(conn, address);
    receiver.add_credit(1);
    const first = await inbox.next();
    assert.equal(first.message.body, 0);
    const more = await sendAll(conn, address, [{ body: 4 }, { body: 5 }]);
    assert.deepEqual(more.outcomes, ['accepted', 'rejected']);
    assert.equal(more.errors[1].condition, FULL);
    first.delivery.accept();
  } finally {
    await close(conn);
  }
  assert.deepEqual((await fetchAll(broker, address)).map((m) => m.body), [1, 2, 4]);
}, LIMITS_CONFIG));

test('max-bytes with overflow reject', () => withBroker(async (broker) => {
  const address = `bytes.${queueName('bytes')}`;
  const conn = await connect(broker);
  try {
    const body = 'x'.repeat(400);
    const { outcomes, errors } = await sendAll(conn, address, [0, 1, 2].map((i) => ({ body, subject: `${i}` })));
    assert.deepEqual(outcomes, ['accepted', 'accepted', 'rejected']);
    assert.equal(errors[2].condition, FULL);
  } finally {
    await close(conn);
  }
  assert.deepEqual((await fetchAll(broker, address)).map((m) => m.subject), ['0', '1']);
}, LIMITS_CONFIG));

for (const where of ['config', 'option']) {
  test(`overflow drop-oldest (${where}): the oldest are gone`, () => withBroker(async (broker) => {
    const base = queueName('drop');
    const address = where === 'config' ? `droplen.${base}` : base;
    const target = where === 'config' ? address : `${address}?queue.max-length=2&queue.overflow=drop-oldest`;
    const conn = await connect(broker);
    try {
      const { outcomes } = await sendAll(conn, target, [0, 1, 2, 3, 4].map((i) => ({ body: i })));
      assert.deepEqual(outcomes, Array(5).fill('accepted'));
    } finally {
      await close(conn);
    }
    assert.deepEqual((await fetchAll(broker, address)).map((m) => m.body), where === 'config' ? [2, 3, 4] : [3, 4]);
  }, LIMITS_CONFIG));
}

test('drop-oldest drops the oldest, not the highest priority at the head', () => withBroker(async (broker) => {
  const address = `droplen.${queueName('drop-prio')}`; // max-length 3
  const conn = await connect(broker);
  try {
    const { outcomes } = await sendAll(conn, address, [
      { body: 'oldest', priority: 0 }, { body: 'urgent', priority: 9 },
      { body: 'normal', priority: 4 }, { body: 'newest', priority: 4 },
    ]);
    assert.deepEqual(outcomes, Array(4).fill('accepted'));
  } finally {
    await close(conn);
  }
  assert.deepEqual((await fetchAll(broker, address)).map((m) => m.body), ['urgent', 'normal', 'newest'],
    'drop-oldest dropped the wrong message');
}, LIMITS_CONFIG));

test('message over max-message-size: rejected amqp:link:message-size-exceeded, the link goes on', () => withBroker(async (broker) => {
  const q = queueName('too-big');
  const conn = await connect(broker);
  try {
    const sender = await openLink(conn, 'sender', { target: { address: q } });
    assert.deepEqual((await sendOne(sender, { body: 'before' })).outcome, 'accepted');
    for (const size of [200 * 1024, 3 << 20]) {
      const { outcome, error } = await sendOne(sender, { body: 'o'.repeat(size) });
      assert.equal(outcome, 'rejected', `${size} bytes`);
      assert.equal(error && error.condition, 'amqp:link:message-size-exceeded', JSON.stringify(error));
      assert.ok(sender.is_open(), 'the producer link was closed');
    }
    assert.deepEqual((await sendOne(sender, { body: 'after' })).outcome, 'accepted');
  } finally {
    await close(conn);
  }
  assert.deepEqual((await fetchAll(broker, q)).map((m) => m.body), ['before', 'after']);
}, config('[limits]\nmax-message-size = 65536\n')));

// ---------------------------------------------------------------------------
// Addresses, options, auto-create

test('queue://x, /queues/x and x name the same queue', () => withBroker(async (broker) => {
  const q = queueName('forms');
  const forms = [q, `queue://${q}`, `/queues/${q}`];
  const conn = await connect(broker);
  try {
    for (const form of forms) await sendAll(conn, form, [{ body: form }]);
    const got = [];
    for (const form of forms) {
      const { receiver, inbox } = await manualReceiver(conn, form, { source: { capabilities: ['queue'] } });
      receiver.add_credit(1);
      const g = await inbox.next();
      g.delivery.accept();
      got.push(g.message.body);
      await closeLink(receiver);
    }
    assert.deepEqual(got, forms);
  } finally {
    await close(conn);
  }
}));

for (const kind of ['receiver', 'sender']) {
  test(`options (${kind}): unknown refused naming it; queue.* mismatch is precondition-failed`, () => withBroker(async (broker) => {
    const q = queueName(`options-${kind}`);
    const terminus = kind === 'sender' ? 'target' : 'source';
    const conn = await connect(broker);
    try {
      for (const [address, name] of [[`${q}?consumer.priority=1&nonsense=2`, 'nonsense'],
        [`${q}?queue.no-such-setting=1`, 'no-such-setting'], [`topic://${q}-t?bogus=1`, 'bogus']]) {
        const err = await refusal(conn, kind, address);
        assert.equal(err.condition, 'amqp:invalid-field', JSON.stringify(err));
        assert.ok((err.description || '').includes(name), `the refusal does not name ${name}: ${err.description}`);
      }
      await openLink(conn, kind, { [terminus]: { address: `${q}?queue.max-delivery-attempts=2` } });
      const err = await refusal(conn, kind, `${q}?queue.max-delivery-attempts=3`);
      assert.equal(err.condition, 'amqp:precondition-failed', JSON.stringify(err));
      await openLink(conn, kind, { [terminus]: { address: `${q}?queue.max-delivery-attempts=2` } });
      await openLink(conn, kind, { [terminus]: { address: q } });
    } finally {
      await close(conn);
    }
  }));
}

test('auto-create off: unknown addresses are amqp:not-found, DLQ and configured addresses exist', () => withBroker(async (broker) => {
  const q = queueName('no-auto');
  const conn = await connect(broker);
  try {
    for (const address of [q, `queue://${q}`, `topic://${q}`, `/queues/${q}`]) {
      for (const kind of ['receiver', 'sender']) {
        const err = await refusal(conn, kind, address);
        assert.equal(err.condition, 'amqp:not-found', `${kind} ${address}: ${JSON.stringify(err)}`);
      }
    }
    for (const address of [DLQ, 'orders-dead', 'orders-expired']) {
      const { outcomes } = await sendAll(conn, address, [{ body: address }]);
      assert.deepEqual(outcomes, ['accepted']);
    }
  } finally {
    await close(conn);
  }
  for (const address of [DLQ, 'orders-dead', 'orders-expired']) {
    assert.deepEqual((await fetchAll(broker, address)).map((m) => m.body), [address]);
  }
}, config(`
[broker]
auto-create = false

[[queues]]
pattern = "orders"
dead-letter-address = "orders-dead"
expiry-address = "orders-expired"
`)));

// ---------------------------------------------------------------------------
// Browsing

test('browsing (distribution_mode copy) sees messages and leaves them', () => withBroker(async (broker) => {
  const q = queueName('browse');
  const conn = await connect(broker);
  try {
    await sendAll(conn, q, [0, 1, 2].map((i) => ({ body: i })));
    const { receiver, inbox } = await manualReceiver(conn, q, { source: { distribution_mode: 'copy' } });
    assert.equal(receiver.remote.attach.source.distribution_mode, 'copy', 'the broker source does not say copy');
    receiver.add_credit(10);
    const seen = await take(inbox, 3);
    assert.deepEqual(seen.map((g) => [g.message.body, count(g.message)]), [[0, 0], [1, 0], [2, 0]]);
    assert.ok(seen.every((g) => g.delivery.remote_settled), 'browsed deliveries should be pre-settled');
    await sendAll(conn, q, [{ body: 3 }]);
    const late = await inbox.next();
    assert.deepEqual([late.message.body, late.delivery.remote_settled], [3, true]);
    await closeLink(receiver);
  } finally {
    await close(conn);
  }
  const again = await fetchAll(broker, q, { source: { distribution_mode: 'copy' } });
  assert.deepEqual(again.map((m) => m.body), [0, 1, 2, 3]);
  const got = await fetchAll(broker, q);
  assert.deepEqual(got.map((m) => [m.body, count(m), !!m.first_acquirer]), [0, 1, 2, 3].map((i) => [i, 0, true]));
}));
