'use strict';
// Exclusive consumers and message groups through rhea (docs/GROUPS.md):
// failover with in-flight messages, the `active` flow properties, priority
// takeover, the exclusive address options and queue setting, groups spread
// over consumers, a group owner's crash, closing a group, JMSXGroupID, group
// filters and Service Bus session filters.

const { test } = require('node:test');
const assert = require('node:assert/strict');

const { withBroker } = require('../lib/broker');
const {
  Inbox, close, closeLink, connect, drain, openLink, queueName, recordFlows, rhea, roundTrip, sendAll,
} = require('../lib/amqp');

const EXCLUSIVE = 'exclusive-consumer';
const FIRST = 'x-opt-group-first-for-consumer';
const SESSION = 'com.microsoft:session-filter';
const count = (m) => m.delivery_count || 0;
// Consumer priority as an AMQP int (rhea would encode a plain 5 as uint).
const int = (n) => rhea.types.wrap_int(n);
const first = (m) => (m.message_annotations || {})[FIRST];
const bodies = (items) => items.map((g) => g.message.body);
const numbered = (n, prefix = 'm') => Array.from({ length: n }, (_, i) => ({ body: `${prefix}${i}` }));
const ACTIVE = { active: true, 'rabbitmq:active': true };
const STANDBY = { active: false, 'rabbitmq:active': false };

// A receiver with no credit (given by hand) and manual settlement, open once
// the broker attached, with an Inbox and its flows recorded (recordFlows).
async function manualReceiver(conn, address, options = {}) {
  const { source = {}, ...rest } = options;
  const receiver = await openLink(conn, 'receiver', {
    source: { address, ...source }, credit_window: 0, autoaccept: false, ...rest,
  }, recordFlows);
  return { receiver, inbox: new Inbox(receiver), flows: receiver.flowProperties };
}

async function take(inbox, n) {
  const out = [];
  for (let i = 0; i < n; i++) out.push(await inbox.next(`message ${i + 1} of ${n}`));
  return out;
}

const acceptAll = (items) => items.forEach((g) => g.delivery.accept());

// Drains a manualReceiver (adding `credit`) and checks that nothing came:
// neither during the drain nor before it (all earlier messages were taken).
async function nothingFor(r, credit = 10, what = 'messages arrived') {
  await drain(r.receiver, credit);
  assert.deepEqual(r.inbox.items.map((i) => i.message.body), [], what);
}

// `exclusive-consumer` in the link properties of the broker's attach.
const echoedExclusive = (receiver) => (receiver.remote.attach.properties || {})[EXCLUSIVE];

// A connection whose end the test brings about by destroying its socket.
async function doomedConnection(broker) {
  const conn = await connect(broker);
  conn.closing = true; // its end is expected
  conn.on('disconnected', () => {});
  return conn;
}

// No detach, no close: like a crash. Resolves once the broker noticed.
async function crash(broker, conn) {
  conn.socket.destroy(new Error('simulated crash'));
  await broker.waitForLog(new RegExp(`connection ended container="${conn.options.container_id}"`));
}

// ---------------------------------------------------------------------------
// Exclusive consumers

test('exclusive failover: the standby gets the in-flight messages first, in order', () => withBroker(async (broker) => {
  const q = queueName('failover');
  const held = 5;
  const total = 8;
  const producer = await connect(broker);
  await sendAll(producer, q, numbered(total));
  await close(producer);

  const doomed = await doomedConnection(broker);
  const conn = await connect(broker);
  try {
    const active = await manualReceiver(doomed, q, { properties: { [EXCLUSIVE]: true } });
    assert.equal(echoedExclusive(active.receiver), true, 'the broker should echo exclusive-consumer');
    active.receiver.add_credit(held);
    assert.deepEqual(bodies(await take(active.inbox, held)), numbered(held).map((m) => m.body));

    const standby = await manualReceiver(conn, q, { properties: { [EXCLUSIVE]: true } });
    assert.equal(echoedExclusive(standby.receiver), true);
    // The active one has no credit left; the standby has, and still gets nothing.
    await nothingFor(standby, 10, 'a standby consumer got messages');
    assert.deepEqual(await standby.flows.next(), STANDBY);
    standby.receiver.add_credit(total);
    await roundTrip(conn, q);

    await crash(broker, doomed);
    assert.deepEqual(await standby.flows.next('active flag after failover'), ACTIVE);
    const got = await take(standby.inbox, total);
    assert.deepEqual(
      got.map((g) => [g.message.body, count(g.message), !!g.message.first_acquirer]),
      numbered(total).map((m, i) => [m.body, i < held ? 1 : 0, i >= held]),
    );
    acceptAll(got);
    await nothingFor(standby, 10);
  } finally {
    await close(conn);
  }
}));

test('active flag: flow properties active and rabbitmq:active, right after attach and on change', () => withBroker(async (broker) => {
  const q = queueName('active-flag');
  const ca = await connect(broker);
  const cb = await connect(broker);
  try {
    const a = await manualReceiver(ca, q, { properties: { [EXCLUSIVE]: true } });
    assert.deepEqual(await a.flows.next('active flag of the first consumer'), ACTIVE);
    // docs/GROUPS.md reads it as ctx.receiver.remote.flow.properties
    // (recordFlows keeps it there; rhea 3.0.5 itself does not).
    assert.deepEqual(a.receiver.remote.flow.properties, ACTIVE);
    const b = await manualReceiver(cb, q, { properties: { [EXCLUSIVE]: true } });
    assert.deepEqual(await b.flows.next('active flag of the second consumer'), STANDBY);

    await sendAll(ca, q, numbered(2));
    a.receiver.add_credit(1);
    b.receiver.add_credit(5);
    const [m0] = await take(a.inbox, 1);
    assert.equal(m0.message.body, 'm0');
    await closeLink(a.receiver); // m0 unsettled
    assert.deepEqual(await b.flows.next('active flag after the detach'), ACTIVE);
    const got = await take(b.inbox, 2);
    assert.deepEqual(got.map((g) => [g.message.body, count(g.message)]), [['m0', 1], ['m1', 0]]);
    acceptAll(got);
  } finally {
    await close(ca);
    await close(cb);
  }
}));

test('priority takeover waits until the active consumer settled everything', () => withBroker(async (broker) => {
  const q = queueName('takeover');
  const ca = await connect(broker);
  const cb = await connect(broker);
  try {
    await sendAll(ca, q, numbered(6));
    const low = await manualReceiver(ca, q, { properties: { [EXCLUSIVE]: true, priority: int(0) } });
    assert.deepEqual(await low.flows.next(), ACTIVE);
    low.receiver.add_credit(2);
    const held = await take(low.inbox, 2);
    assert.deepEqual(bodies(held), ['m0', 'm1']);

    const high = await manualReceiver(cb, q, { properties: { [EXCLUSIVE]: true, priority: int(5) } });
    high.receiver.add_credit(10);
    assert.equal(echoedExclusive(high.receiver), true);
    assert.deepEqual(await high.flows.next(), STANDBY, 'the newcomer is not active before the switch');
    await roundTrip(cb, q);
    // Meanwhile nobody receives: neither the newcomer nor the old one given credit.
    await nothingFor(high, 10, 'the newcomer got messages before the takeover');
    await nothingFor(low, 4, 'the old consumer got messages during the takeover');

    held[0].delivery.accept(); // m1 still out
    await roundTrip(ca, q);
    await nothingFor(high, 10, 'switched with a delivery still unsettled');
    await nothingFor(low, 4);

    high.receiver.add_credit(10);
    await roundTrip(cb, q);
    held[1].delivery.accept(); // nothing unsettled: the newcomer takes over
    assert.deepEqual(await high.flows.next('active flag of the newcomer'), ACTIVE);
    assert.deepEqual(await low.flows.next('active flag of the old consumer'), STANDBY);
    const got = await take(high.inbox, 4);
    assert.deepEqual(got.map((g) => [g.message.body, count(g.message)]),
      [['m2', 0], ['m3', 0], ['m4', 0], ['m5', 0]]);
    acceptAll(got);
    await sendAll(ca, q, [{ body: 'm6' }]);
    const [m6] = await take(high.inbox, 1);
    assert.equal(m6.message.body, 'm6');
    m6.delivery.accept();
    await nothingFor(low, 10, 'the old consumer got messages after the takeover');
  } finally {
    await close(ca);
    await close(cb);
  }
}));

test('exclusive and priority by address options; others wait, then compete again', () => withBroker(async (broker) => {
  const q = queueName('exclusive-option');
  const conn = await connect(broker);
  try {
    const low = await manualReceiver(conn, q, { properties: { [EXCLUSIVE]: true, priority: int(2) } });
    const opt = await manualReceiver(conn, `${q}?consumer.exclusive=true&consumer.priority=3`);
    const plain = await manualReceiver(conn, q);
    assert.equal(echoedExclusive(low.receiver), true);
    assert.equal(echoedExclusive(opt.receiver), true, 'exclusivity by address option not echoed');
    assert.equal(echoedExclusive(plain.receiver), undefined, 'a consumer that did not ask was made exclusive');
    // The option's priority 3 beats the earlier consumer's 2.
    assert.deepEqual(await opt.flows.next(), ACTIVE);
    for (const r of [low, opt, plain]) r.receiver.add_credit(10);
    await sendAll(conn, q, numbered(4));
    const got = await take(opt.inbox, 4);
    assert.deepEqual(bodies(got), ['m0', 'm1', 'm2', 'm3']);
    await nothingFor(low, 10);
    await nothingFor(plain, 10);

    got[0].delivery.accept();
    got[1].delivery.accept();
    await closeLink(opt.receiver); // m2, m3 unsettled: `low` is the active one now
    low.receiver.add_credit(10);
    const back = await take(low.inbox, 2);
    assert.deepEqual(back.map((g) => [g.message.body, count(g.message)]), [['m2', 1], ['m3', 1]]);
    acceptAll(back);
    await nothingFor(plain, 10);

    await closeLink(low.receiver); // no exclusive consumer left
    plain.receiver.add_credit(10);
    await sendAll(conn, q, [{ body: 'm4' }, { body: 'm5' }]);
    const later = await take(plain.inbox, 2);
    assert.deepEqual(later.map((g) => [g.message.body, count(g.message)]), [['m4', 0], ['m5', 0]]);
    acceptAll(later);
  } finally {
    await close(conn);
  }
}));

for (const setting of ['queue.exclusive', 'queue.x-single-active-consumer']) {
  test(`queue setting ?${setting}=true makes plain consumers exclusive`, () => withBroker(async (broker) => {
    const q = queueName('exclusive-queue');
    const conn = await connect(broker);
    try {
      const one = await manualReceiver(conn, `${q}?${setting}=true`);
      const two = await manualReceiver(conn, q);
      assert.equal(echoedExclusive(one.receiver), true);
      assert.equal(echoedExclusive(two.receiver), true);
      assert.deepEqual(await one.flows.next(), ACTIVE);
      assert.deepEqual(await two.flows.next(), STANDBY);
      one.receiver.add_credit(10);
      two.receiver.add_credit(10);
      await sendAll(conn, q, numbered(5));
      const got = await take(one.inbox, 5);
      assert.deepEqual(bodies(got), numbered(5).map((m) => m.body));
      await nothingFor(two, 10, 'a standby consumer got messages');
      acceptAll(got.slice(0, 3));
      await closeLink(one.receiver); // m3, m4 unsettled
      two.receiver.add_credit(10);
      const back = await take(two.inbox, 2);
      assert.deepEqual(back.map((g) => [g.message.body, count(g.message)]), [['m3', 1], ['m4', 1]]);
      acceptAll(back);
    } finally {
      await close(conn);
    }
  }));
}

test('exclusive: undeliverable-here leaves the message at the head, nothing overtakes it', () => withBroker(async (broker) => {
  const q = queueName('exclusive-undeliverable');
  const conn = await connect(broker);
  try {
    await sendAll(conn, q, numbered(3));
    const a = await manualReceiver(conn, q, { properties: { [EXCLUSIVE]: true } });
    const b = await manualReceiver(conn, q, { properties: { [EXCLUSIVE]: true } });
    a.receiver.add_credit(1);
    const [m0] = await take(a.inbox, 1);
    assert.equal(m0.message.body, 'm0');
    m0.delivery.modified({ delivery_failed: false, undeliverable_here: true });
    assert.deepEqual((await drain(a.receiver, 5)).map((m) => m.body), [], 'messages overtook m0');
    await nothingFor(b, 5);
    await closeLink(a.receiver);
    assert.deepEqual((await drain(b.receiver, 5)).map((m) => m.body), ['m0', 'm1', 'm2']);
  } finally {
    await close(conn);
  }
}));

// ---------------------------------------------------------------------------
// Message groups

test('30 groups over 3 consumers: one consumer per group, in order, 10 each; a late consumer takes none', () => withBroker(async (broker) => {
  const q = queueName('thirty-groups');
  const groups = 30;
  const perGroup = 10;
  const total = groups * perGroup;
  const conns = [];
  try {
    const got = [];
    const receivers = [];
    for (let k = 0; k < 3; k++) {
      const conn = await connect(broker);
      conns.push(conn);
      const receiver = await openLink(conn, 'receiver', { source: { address: q }, credit_window: 0 });
      const mine = [];
      receiver.on('message', (ctx) => mine.push(ctx.message));
      receiver.add_credit(total);
      await roundTrip(conn, q); // every consumer has credit before the first message
      got.push(mine);
      receivers.push(receiver);
    }
    const producer = await connect(broker);
    conns.push(producer);
    const messages = [];
    for (let i = 0; i < perGroup; i++) {
      for (let g = 0; g < groups; g++) {
        messages.push({ body: `g${g}:${i}`, group_id: `g${g}`, application_properties: { seq: i } });
      }
    }
    const { outcomes } = await sendAll(producer, q, messages);
    assert.ok(outcomes.every((o) => o === 'accepted'));
    // Everything was dispatched before its producer got `accepted`: once each
    // consumer's drain completed, it has all it was given (some of it may
    // still have been on its way when the drain began).
    for (const r of receivers) await drain(r);
    const owner = new Map();
    got.forEach((msgs, k) => {
      const mine = new Map();
      for (const m of msgs) {
        if (!mine.has(m.group_id)) {
          assert.equal(first(m), true, `consumer ${k}: first of ${m.group_id} not annotated`);
          mine.set(m.group_id, []);
        } else {
          assert.equal(first(m), undefined, `consumer ${k}: ${m.body} annotated as a first`);
        }
        mine.get(m.group_id).push(m.application_properties.seq);
        assert.equal(m.body, `${m.group_id}:${m.application_properties.seq}`);
      }
      for (const [g, seqs] of mine) {
        assert.deepEqual(seqs, [...Array(perGroup).keys()], `consumer ${k}: group ${g}`);
        assert.ok(!owner.has(g), `group ${g} went to consumers ${owner.get(g)} and ${k}`);
        owner.set(g, k);
      }
      assert.equal(mine.size, groups / 3, `consumer ${k} got groups ${[...mine.keys()]}`);
    });
    assert.equal(owner.size, groups);

    // A consumer attaching later takes no group from the others (no
    // rebalance), only a new group (it owns the fewest).
    const lateConn = await connect(broker);
    conns.push(lateConn);
    const late = await openLink(lateConn, 'receiver', { source: { address: q }, credit_window: 0 });
    const lateGot = [];
    late.on('message', (ctx) => lateGot.push(ctx.message));
    late.add_credit(groups + 1);
    await roundTrip(lateConn, q);
    const before = got.map((msgs) => msgs.length);
    for (const [k, r] of receivers.entries()) {
      r.add_credit(groups + 1);
      await roundTrip(conns[k], q);
    }
    const more = Array.from({ length: groups }, (_, g) => ({
      body: `g${g}:${perGroup}`, group_id: `g${g}`, application_properties: { seq: perGroup },
    }));
    more.push({ body: 'new:0', group_id: 'new', application_properties: { seq: 0 } });
    await sendAll(producer, q, more);
    for (const r of [...receivers, late]) await drain(r);
    assert.deepEqual(lateGot.map((m) => [m.body, first(m)]), [['new:0', true]]);
    got.forEach((msgs, k) => {
      const added = msgs.slice(before[k]);
      assert.deepEqual(added.map((m) => m.group_id).sort(),
        [...owner].filter(([, o]) => o === k).map(([g]) => g).sort(), `consumer ${k} lost or gained groups`);
      assert.ok(added.every((m) => first(m) === undefined));
    });
  } finally {
    for (const c of conns) await close(c);
  }
}));

test('group owner crash: the group moves with its unsettled messages, in order', () => withBroker(async (broker) => {
  const q = queueName('owner-crash');
  const held = 3;
  const total = 6;
  const conn = await connect(broker);
  const doomed = await doomedConnection(broker);
  try {
    await sendAll(conn, q, numbered(total, 'g').map((m) => ({ ...m, group_id: 'g' })));
    const owner = await manualReceiver(doomed, q);
    owner.receiver.add_credit(held);
    const heldMsgs = await take(owner.inbox, held);
    assert.deepEqual(heldMsgs.map((g) => [g.message.body, first(g.message)]),
      [['g0', true], ['g1', undefined], ['g2', undefined]]);

    const other = await manualReceiver(conn, q);
    await nothingFor(other, 10, 'g went past its owner');
    other.receiver.add_credit(10);
    // Other groups still flow to the consumer with credit.
    await sendAll(conn, q, [{ body: 'h0', group_id: 'h' }, { body: 'h1', group_id: 'h' }]);
    const h = await take(other.inbox, 2);
    assert.deepEqual(h.map((g) => [g.message.body, first(g.message)]), [['h0', true], ['h1', undefined]]);
    acceptAll(h);

    await crash(broker, doomed);
    const got = await take(other.inbox, total);
    assert.deepEqual(
      got.map((g) => [g.message.body, count(g.message), first(g.message)]),
      numbered(total, 'g').map((m, i) => [m.body, i < held ? 1 : 0, i === 0 ? true : undefined]),
    );
    acceptAll(got);
    await nothingFor(other, 10);
  } finally {
    await close(conn);
  }
}));

// A message of group "g" by properties.group-id or by the application property
// JMSXGroupID; seq -1 closes the group (group-sequence 4294967295, as Qpid JMS
// sends JMSXGroupSeq = -1, or a negative JMSXGroupSeq).
function grouped(way, body, seq) {
  if (way === 'group_id') return { body, group_id: 'g', group_sequence: seq >>> 0 };
  return { body, application_properties: { JMSXGroupID: 'g', JMSXGroupSeq: seq } };
}

for (const way of ['group_id', 'JMSXGroupID']) {
  test(`closing message (${way}) releases the group once accepted`, () => withBroker(async (broker) => {
    const q = queueName('group-close');
    const conn = await connect(broker);
    try {
      const a = await manualReceiver(conn, q);
      const b = await manualReceiver(conn, q);
      a.receiver.add_credit(2);
      await sendAll(conn, q, [grouped(way, 'g1', 1), grouped(way, 'g2', -1)]);
      const held = await take(a.inbox, 2);
      assert.deepEqual(held.map((g) => [g.message.body, first(g.message)]), [['g1', true], ['g2', undefined]]);
      if (way === 'group_id') {
        assert.deepEqual(held.map((g) => g.message.group_sequence), [1, 4294967295]);
      } else {
        assert.deepEqual(held.map((g) => g.message.application_properties.JMSXGroupSeq), [1, -1]);
      }
      b.receiver.add_credit(10);
      await sendAll(conn, q, [grouped(way, 'g3', 1)]);
      await nothingFor(b, 10, 'the group was released before its closing message was accepted');
      b.receiver.add_credit(10);
      acceptAll(held); // the second one closes the group
      const [g3] = await take(b.inbox, 1);
      assert.deepEqual([g3.message.body, first(g3.message)], ['g3', true]);
      g3.delivery.accept();
      // The group is b's now, even with `a` given credit again.
      a.receiver.add_credit(10);
      await sendAll(conn, q, [grouped(way, 'g4', 2)]);
      const [g4] = await take(b.inbox, 1);
      assert.deepEqual([g4.message.body, first(g4.message)], ['g4', undefined]);
      g4.delivery.accept();
      await nothingFor(a, 10);
    } finally {
      await close(conn);
    }
  }));
}

for (const prop of ['JMSXGroupID', '_AMQ_GROUP_ID']) {
  test(`application property ${prop} groups like group_id`, () => withBroker(async (broker) => {
    const q = queueName('jms-group');
    const conn = await connect(broker);
    try {
      const x = await manualReceiver(conn, q);
      const y = await manualReceiver(conn, q);
      x.receiver.add_credit(20);
      y.receiver.add_credit(20);
      const messages = [];
      for (let i = 0; i < 5; i++) {
        for (const g of ['j', 'k']) messages.push({ body: `${g}${i}`, application_properties: { [prop]: g } });
      }
      // group_id wins over the application property.
      messages.push({ body: 'j5', group_id: 'j', application_properties: { [prop]: 'k' } });
      await sendAll(conn, q, messages);
      // Once each drain completed, its Inbox holds everything it was given.
      for (const r of [x, y]) await drain(r.receiver);
      const byConsumer = [x, y].map((r) => r.inbox.items.map((i) => i.message));
      const sorted = byConsumer.map((ms) => ms.map((m) => m.body)).sort((p, r) => p[0].localeCompare(r[0]));
      assert.deepEqual(sorted, [['j0', 'j1', 'j2', 'j3', 'j4', 'j5'], ['k0', 'k1', 'k2', 'k3', 'k4']]);
      for (const ms of byConsumer) {
        assert.deepEqual(ms.map(first), [true, ...Array(ms.length - 1).fill(undefined)]);
      }
    } finally {
      await close(conn);
    }
  }));
}

test('group filters: link property, address option, session filter; locked and timeout refusals', () => withBroker(async (broker) => {
  const q = queueName('group-filter');
  const conn = await connect(broker);
  try {
    const messages = [];
    for (let i = 0; i < 3; i++) for (const g of 'abcd') messages.push({ body: `${g}${i}`, group_id: g });
    await sendAll(conn, q, messages);

    const ra = await manualReceiver(conn, q, { properties: { 'group-filter': 'a' } });
    const rb = await manualReceiver(conn, `${q}?consumer.group-filter=b`);
    const rc = await manualReceiver(conn, q, { source: { filter: { [SESSION]: 'c' } } });
    for (const [r, g] of [[ra, 'a'], [rb, 'b'], [rc, 'c']]) {
      r.receiver.add_credit(10);
      const got = await take(r.inbox, 3);
      assert.deepEqual(got.map((i) => [i.message.body, first(i.message)]),
        [[`${g}0`, true], [`${g}1`, undefined], [`${g}2`, undefined]], `filter ${g}`);
      acceptAll(got);
      await nothingFor(r, 10, `filter ${g} got more`);
    }

    await assert.rejects(openLink(conn, 'receiver', {
      source: { address: q, filter: { [SESSION]: 'c' } }, credit_window: 0,
    }), (e) => {
      assert.equal(e.condition && e.condition.condition, 'com.microsoft:session-cannot-be-locked',
        JSON.stringify(e.condition));
      return true;
    });

    const any = await manualReceiver(conn, q, { source: { filter: { [SESSION]: null } } });
    assert.deepEqual(any.receiver.remote.attach.source.filter, { [SESSION]: 'd' },
      'the broker\'s attach should name the group it picked');
    any.receiver.add_credit(10);
    const d = await take(any.inbox, 3);
    assert.deepEqual(bodies(d), ['d0', 'd1', 'd2']);
    acceptAll(d);

    await assert.rejects(openLink(conn, 'receiver', {
      source: { address: q, filter: { [SESSION]: null } }, credit_window: 0,
    }), (e) => {
      assert.equal(e.condition && e.condition.condition, 'com.microsoft:timeout', JSON.stringify(e.condition));
      return true;
    });

    // The filtering consumers hold their groups: an ordinary consumer with
    // credit gets other groups only.
    const plain = await manualReceiver(conn, q);
    plain.receiver.add_credit(10);
    await sendAll(conn, q, [
      { body: 'a3', group_id: 'a' }, { body: 'e0', group_id: 'e' }, { body: 'c3', group_id: 'c' },
    ]);
    await drain(plain.receiver);
    assert.deepEqual(plain.inbox.items.map((i) => i.message.body), ['e0']);
    assert.deepEqual((await drain(ra.receiver, 10)).map((m) => m.body), ['a3']);
    assert.deepEqual((await drain(rc.receiver, 10)).map((m) => m.body), ['c3']);
  } finally {
    await close(conn);
  }
}));
