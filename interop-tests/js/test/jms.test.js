'use strict';
// JMS-era features through rhea, with the wire conventions of Qpid JMS and
// ActiveMQ Artemis: selectors (apache.org:selector-filter:string) on queues
// and topic subscriptions, checked against a reference evaluator on random
// messages and selectors; no-local (apache.org:no-local-filter:list); shared
// subscriptions (capabilities `shared` / `global`, link names `sub`,
// `sub|2`), durable ones too; scheduled delivery (x-opt-delivery-time,
// x-opt-delivery-delay); redelivery-delay; duplicate detection
// (duplicate-window, duplicate-window-time, _AMQ_DUPL_ID, across a restart);
// wildcard subscriptions (`prices.*`, `orders.#`).
//
// The random selector test prints its seed; JMS_SEED=<seed> replays it, and
// JMS_VERBOSE=1 lists its selectors with how many messages each selects.

const { test } = require('node:test');
const assert = require('node:assert/strict');

const { withBroker, DEFAULT_CONFIG } = require('../lib/broker');
const {
  Inbox, close, closeLink, connect, drain, fetchAll, openLink, queueName, rhea, roundTrip, sendAll,
  sendOne, withTimeout,
} = require('../lib/amqp');

const { types } = rhea;
const SELECTOR = 'apache.org:selector-filter:string';
const SELECTOR_CODE = 0x468C00000004;
const NO_LOCAL = 'apache.org:no-local-filter:list';
const NO_LOCAL_CODE = 0x468C00000003;
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const count = (m) => m.delivery_count || 0;

// rhea's helper: {'jms-selector': described(ulong 0x468C00000004, text)}.
const selectorFilter = (text) => rhea.filter.selector(text);
const noLocalFilter = (descriptor = NO_LOCAL) => ({ 'no-local': types.wrap_described([], descriptor) });

// A receiver with no credit (given by drain or by hand), open once the broker
// attached; its messages are kept in an Inbox and, with arrival times, in
// `arrivals`.
async function consumer(conn, source, options = {}) {
  const receiver = await openLink(conn, 'receiver', {
    source, credit_window: 0, autoaccept: true, ...options,
  });
  const arrivals = [];
  receiver.on('message', (ctx) => arrivals.push({ message: ctx.message, delivery: ctx.delivery, at: Date.now() }));
  return { receiver, inbox: new Inbox(receiver), arrivals };
}

// Sends `messages` on a connection of its own; all must be accepted.
async function publish(broker, address, messages, target = {}) {
  const conn = await connect(broker);
  try {
    const { outcomes } = await sendAll(conn, address, messages, { target });
    assert.deepEqual(outcomes, messages.map(() => 'accepted'), `publishing to ${address}`);
  } finally {
    await close(conn);
  }
}

// Waits (bounded) until `cond()` holds.
async function until(cond, what, ms = 5000) {
  const deadline = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms: ${what}`);
    await sleep(5);
  }
}

// The body of each message a drain brought.
const bodiesOf = (msgs) => msgs.map((m) => m.body);

// The filter entry `key` of the broker's attach (rhea keeps it described).
function echoedFilter(receiver, key) {
  const filter = receiver.remote.attach.source && receiver.remote.attach.source.filter;
  return filter ? filter[key] : undefined;
}

function assertEchoedSelector(receiver, key, text, descriptor) {
  const f = echoedFilter(receiver, key);
  assert.ok(f, `the broker did not echo filter '${key}': ${JSON.stringify(receiver.remote.attach.source)}`);
  assert.equal(f.value, text, 'echoed selector text');
  assert.ok(f.descriptor, 'the echoed selector is not described');
  assert.equal(f.descriptor.value, descriptor, 'echoed selector descriptor');
}

// Asserts that a receiver attach is refused with `condition`; resolves with
// the error's description.
async function assertRefused(conn, options, condition) {
  let description;
  await assert.rejects(openLink(conn, 'receiver', { credit_window: 0, ...options }), (e) => {
    assert.ok(e.condition, `refused without an error: ${e.message}`);
    assert.equal(e.condition.condition, condition, JSON.stringify(e.condition));
    description = e.condition.description;
    return true;
  });
  return description;
}

// ---------------------------------------------------------------------------
// Selectors

test('selector on a queue consumer: only matching messages, the others stay for other consumers; echoed', () => withBroker(async (broker) => {
  const q = queueName('selector-queue');
  const conn = await connect(broker);
  try {
    await sendAll(conn, q, ['red', 'blue', 'red', 'green', 'blue', 'red'].map((color, i) => ({
      body: `${color}${i}`, application_properties: { color },
    })));
    const sel = "color = 'red'";
    const reds = await consumer(conn, { address: q, filter: selectorFilter(sel) });
    assertEchoedSelector(reds.receiver, 'jms-selector', sel, SELECTOR_CODE);
    assert.deepEqual(bodiesOf(await drain(reds.receiver, 10)), ['red0', 'red2', 'red5']);
    // Messages published later are filtered too.
    await sendAll(conn, q, [{ body: 'blue6', application_properties: { color: 'blue' } },
      { body: 'red7', application_properties: { color: 'red' } }]);
    assert.deepEqual(bodiesOf(await drain(reds.receiver, 10)), ['red7']);
    // The others are still there, in order, for a consumer without a selector.
    const all = await consumer(conn, { address: q });
    assert.deepEqual(bodiesOf(await drain(all.receiver, 10)), ['blue1', 'green3', 'blue4', 'blue6']);
    // A selector consumer waiting with credit gets a match behind non-matching ones.
    const greens = await consumer(conn, { address: q, filter: selectorFilter("color = 'green'") });
    greens.receiver.add_credit(5);
    await closeLink(all.receiver);
    await sendAll(conn, q, [{ body: 'blue8', application_properties: { color: 'blue' } },
      { body: 'green9', application_properties: { color: 'green' } }]);
    assert.equal((await greens.inbox.next('green9')).message.body, 'green9');
    assert.deepEqual(bodiesOf(await fetchAll(broker, q)), ['blue8']);
  } finally {
    await close(conn);
  }
}));

test('selector filter by symbol descriptor under any key, and by numeric descriptor', () => withBroker(async (broker) => {
  const topic = `topic://${queueName('selector-descriptors')}`;
  const conn = await connect(broker);
  try {
    const bySymbol = await consumer(conn, {
      address: topic, filter: { 'my-filter': types.wrap_described('n > 1', SELECTOR) },
    });
    assertEchoedSelector(bySymbol.receiver, 'my-filter', 'n > 1', SELECTOR);
    const byCode = await consumer(conn, {
      address: topic, filter: { 'other-key': types.wrap_described('n < 3', SELECTOR_CODE) },
    });
    assertEchoedSelector(byCode.receiver, 'other-key', 'n < 3', SELECTOR_CODE);
    await publish(broker, topic, [1, 2, 3].map((n) => ({ body: `n${n}`, application_properties: { n } })));
    assert.deepEqual(bodiesOf(await drain(bySymbol.receiver, 10)), ['n2', 'n3']);
    assert.deepEqual(bodiesOf(await drain(byCode.receiver, 10)), ['n1', 'n2']);
  } finally {
    await close(conn);
  }
}));

// A topic with one subscription per selector: each gets its filtered copy.
// Resolves with the bodies each subscription got, by selector.
async function selectOnTopic(broker, label, selectors, messages, credit = 50) {
  const topic = `topic://${queueName(label)}`;
  const conn = await connect(broker);
  try {
    const subs = [];
    for (const sel of selectors) {
      subs.push((await consumer(conn, { address: topic, filter: selectorFilter(sel) })).receiver);
    }
    await publish(broker, topic, messages);
    const got = new Map();
    for (const [i, sel] of selectors.entries()) got.set(sel, bodiesOf(await drain(subs[i], credit)).sort());
    return got;
  } finally {
    await close(conn);
  }
}

test('selector operators and three-valued logic over application properties', () => withBroker(async (broker) => {
  const rows = {
    a: { color: 'red', n: 1, x: 1.5, ok: true, path: 'a_b', v: 'x' },
    b: { color: 'blue', n: 2, x: -2.5, ok: false, path: 'a%b', v: 5 },
    c: { color: 'green', n: 3, path: 'axb', name: "it's", v: true },
    d: { n: 10, x: 0.5, v: 2.5 },
    e: {},
  };
  const messages = Object.entries(rows).map(([id, props]) => ({
    body: id,
    application_properties: Object.fromEntries(Object.entries(props).map(([k, v]) => [
      k, typeof v === 'number' ? (Number.isInteger(v) ? types.wrap_int(v) : types.wrap_double(v)) : v,
    ])),
  }));
  const cases = {
    "color = 'red'": 'a',
    "color <> 'red'": 'bc',
    "NOT color = 'red'": 'bc',
    "NOT (color = 'red')": 'bc',
    "color = 'Red'": '',
    "COLOR = 'red'": '',
    "color = 'red' and n = 1": 'a',
    'n > 1 AND n <= 3': 'bc',
    'n >= 3': 'cd',
    'n < 2': 'a',
    "n < 2 OR color = 'green'": 'ac',
    'n = 1 OR missing = 1': 'a',
    'NOT (n = 1 AND missing = 1)': 'bcd',
    'missing = 1 OR NOT missing = 1': '',
    'missing <> 1': '',
    'NOT missing <> 1': '',
    'n = 1.0': 'a',
    'x * 2 = 3': 'a',
    'n - 0.5 > 1.4': 'bcd',
    'n / 2 = 1': 'bc',
    'n * 2 + 1 = 7': 'c',
    'n + 2 * 3 = 7': 'a',
    '(n + 2) * 3 = 9': 'a',
    '-n < -2': 'cd',
    '- x > 0': 'b',
    'n - -2 = 3': 'a',
    "color IN ('red', 'green')": 'ac',
    "color NOT IN ('red', 'green')": 'b',
    'n BETWEEN 2 AND 10': 'bcd',
    'n NOT BETWEEN 2 AND 3': 'ad',
    'x BETWEEN -3 AND 1': 'bd',
    "color LIKE 'r%'": 'a',
    "color LIKE '_r%'": 'c',
    "color NOT LIKE 'b%'": 'ac',
    "path LIKE 'a_b'": 'abc',
    "path LIKE 'a\\_b' ESCAPE '\\'": 'a',
    "path LIKE '%!%%' ESCAPE '!'": 'b',
    'color IS NULL': 'de',
    'color IS NOT NULL': 'abc',
    'missing IS NULL': 'abcde',
    'x IS NULL AND n IS NOT NULL': 'c',
    'ok = TRUE': 'a',
    ok: 'a',
    'NOT ok': 'b',
    'ok <> TRUE': 'b',
    'ok = FALSE OR ok IS NULL': 'bcde',
    "name = 'it''s'": 'c',
    'TRUE': 'abcde',
    'FALSE OR n = 2': 'b',
    '1 + 1 = 2': 'abcde',
    // Values of different types (JMS 3.8.1.2, ActiveMQ, Artemis): never
    // equal (= false, <> true), never ordered (false); LIKE and IN on a
    // non-string false (NOT LIKE, NOT IN true); BETWEEN is x >= a AND x <= b,
    // NOT BETWEEN x < a OR x > b, so another type is in neither. NULL is
    // still unknown.
    "n = 'red'": '',
    "n <> 'red'": 'abcd',
    'NOT (color = 3)': 'abc',
    'color <> 3': 'abc',
    'color < 3 OR color >= 3': '',
    "NOT (n < 'z')": 'abcd',
    "n > '0'": '',
    'ok = 1': '',
    'ok <> 1': 'ab',
    'ok < TRUE OR ok >= FALSE': '',
    'NOT (ok > FALSE)': 'ab',
    "1 = '1'": '',
    "1 <> '1'": 'abcde',
    "missing <> 'x'": '',
    "n NOT LIKE '1%'": 'abcd',
    "n LIKE '%'": '',
    "NOT (x LIKE '%')": 'abd',
    "ok NOT IN ('true', 'TRUE')": 'ab',
    "n IN ('1', '2')": '',
    "n NOT IN ('1', '2')": 'abcd',
    "missing NOT LIKE '%' OR missing NOT IN ('x')": '',
    'color BETWEEN 1 AND 5': '',
    'color NOT BETWEEN 1 AND 5': '',
    'NOT (color NOT BETWEEN 1 AND 5)': 'abc',
    "n NOT BETWEEN 'a' AND 5": 'd',
    "n BETWEEN 0 AND 'z'": '',
    'ok NOT BETWEEN FALSE AND TRUE': '',
    'n BETWEEN missing AND 5': '',
    'n NOT BETWEEN 1 AND missing': '',
    // Strings order lexically (by character code: '%' < '_' < 'x').
    "color < 'm'": 'bc',
    "color >= 'red'": 'a',
    "color > 'R'": 'abc',
    "path < 'a_'": 'b',
    "path >= 'a_b' AND path < 'az'": 'ac',
    "'ab' > 'a'": 'abcde',
    "color BETWEEN 'blue' AND 'green'": 'bc',
    "color NOT BETWEEN 'blue' AND 'green'": 'a',
    "path BETWEEN 'a%' AND 'a_z'": 'ab',
    "missing < 'm'": '',
    // v is a string, an int, a boolean, a double.
    'v = 5': 'b',
    'v <> 5': 'acd',
    'v > 2': 'bd',
    "v >= 'a'": 'a',
    'v = TRUE': 'c',
    'v <> TRUE': 'abd',
    "v < 'y' OR v < 3": 'ad',
    "v LIKE '%'": 'a',
    "v NOT LIKE 'y%'": 'abcd',
    "v NOT IN ('x')": 'bcd',
    'v BETWEEN 2 AND 6': 'bd',
    'v NOT BETWEEN 2 AND 6': '',
    'v NOT BETWEEN 3 AND 6': 'd',
    'v IS NULL': 'e',
  };
  const selectors = Object.keys(cases);
  const got = await selectOnTopic(broker, 'selector-ops', selectors, messages);
  const wrong = selectors.filter((s) => got.get(s).join('') !== cases[s])
    .map((s) => `${s}: expected [${cases[s]}], got [${got.get(s).join('')}]`);
  assert.deepEqual(wrong, [], 'selectors that selected the wrong messages');
}));

test('selectors over JMS header fields', () => withBroker(async (broker) => {
  const t0 = Date.now() - 60000;
  const messages = [
    {
      body: 'h1', message_id: 'h1', correlation_id: 'c-1', subject: 'order', priority: 9, durable: true,
      creation_time: new Date(t0),
    },
    {
      body: 'h2', message_id: 'h2', subject: 'quote', priority: 1, durable: false,
      creation_time: new Date(t0 + 1000),
    },
    { body: 'h3', message_id: 'h3', correlation_id: 'c-2' }, // no header at all: priority 4, non-persistent
    { body: 'h4', message_id: 42 }, // ulong message-id
  ];
  const cases = {
    'JMSPriority > 5': ['h1'],
    'JMSPriority = 4': ['h3', 'h4'],
    'JMSPriority BETWEEN 0 AND 3': ['h2'],
    "JMSMessageID = 'h2'": ['h2'],
    "JMSMessageID IN ('h1', 'h3')": ['h1', 'h3'],
    "JMSMessageID = 'ID:AMQP_ULONG:42'": ['h4'],
    "JMSCorrelationID = 'c-1'": ['h1'],
    "JMSCorrelationID LIKE 'c-%'": ['h1', 'h3'],
    'JMSCorrelationID IS NULL': ['h2', 'h4'],
    "JMSType = 'order'": ['h1'],
    "JMSType <> 'order'": ['h2'],
    'JMSType IS NULL': ['h3', 'h4'],
    "JMSDeliveryMode = 'PERSISTENT'": ['h1'],
    "JMSDeliveryMode = 'NON_PERSISTENT'": ['h2', 'h3', 'h4'],
    [`JMSTimestamp > ${t0}`]: ['h2'],
    [`JMSTimestamp BETWEEN ${t0} AND ${t0 + 500}`]: ['h1'],
  };
  const selectors = Object.keys(cases);
  const got = await selectOnTopic(broker, 'selector-headers', selectors, messages);
  const wrong = selectors.filter((s) => JSON.stringify(got.get(s)) !== JSON.stringify(cases[s]))
    .map((s) => `${s}: expected ${JSON.stringify(cases[s])}, got ${JSON.stringify(got.get(s))}`);
  assert.deepEqual(wrong, [], 'selectors that selected the wrong messages');
}));

test('an invalid selector refuses the attach with amqp:invalid-field and the parse error', () => withBroker(async (broker) => {
  const q = queueName('bad-selector');
  const topic = `topic://${queueName('bad-selector-topic')}`;
  const conn = await connect(broker);
  try {
    const bad = [
      'color = ',
      "color == 'red'",
      "color = 'unterminated",
      'color LIKE 5',
      'n IN (1, 2)',
      'AND',
      "color = 'red' extra",
      'n # 2',
      '(n = 1',
      'n BETWEEN 1',
    ];
    for (const address of [q, topic]) {
      for (const sel of bad) {
        const description = await assertRefused(conn, { source: { address, filter: selectorFilter(sel) } },
          'amqp:invalid-field');
        assert.match(String(description), /selector/i, `description for ${JSON.stringify(sel)}`);
        assert.match(String(description), /\d/, `no position in the description for ${JSON.stringify(sel)}`);
      }
    }
    // The connection is fine, and so is a valid selector on the same address.
    const ok = await consumer(conn, { address: q, filter: selectorFilter('n = 1') });
    await sendAll(conn, q, [{ body: 'one', application_properties: { n: 1 } }]);
    assert.deepEqual(bodiesOf(await drain(ok.receiver, 5)), ['one']);
  } finally {
    await close(conn);
  }
}));

test('a durable subscription keeps its selector while away and across a restart', () => withBroker(async (broker) => {
  const topic = `topic://${queueName('durable-selector')}`;
  const cid = queueName('durable-selector-client');
  const sel = "kind = 'keep'";
  const source = { address: topic, durable: 2, expiry_policy: 'never', filter: selectorFilter(sel) };
  const message = (body, kind) => ({ body, durable: true, application_properties: { kind } });
  let conn = await connect(broker, { container_id: cid });
  const sub = await consumer(conn, source, { name: 'sub' });
  assertEchoedSelector(sub.receiver, 'jms-selector', sel, SELECTOR_CODE);
  await withTimeout(new Promise((resolve) => {
    sub.receiver.once('receiver_close', resolve);
    sub.receiver.detach(); // away, not unsubscribed
  }), 'detach');
  await close(conn);
  await publish(broker, topic, [message('k1', 'keep'), message('d1', 'drop'), message('k2', 'keep')]);
  await broker.crashAndRestart();
  await publish(broker, topic, [message('d2', 'drop'), message('k3', 'keep'), message('n1')]);
  conn = await connect(broker, { container_id: cid });
  try {
    const back = await consumer(conn, source, { name: 'sub' });
    assert.deepEqual(bodiesOf(await drain(back.receiver, 10)), ['k1', 'k2', 'k3']);
    await closeLink(back.receiver);
  } finally {
    await close(conn);
  }
}));

// ---------------------------------------------------------------------------
// Random selectors against a reference evaluator (three-valued logic).

function mulberry32(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6D2B79F5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const STRINGS = ['red', 'reed', 'rd', 'r_d', 'rXd', 'green', 'blue', '10%', '100', "it's", '', 'RED'];
const TYPES = ['order', 'quote', 'Order'];
const LIKES = [
  ['r%'], ['%d'], ['r_d'], ['%e%'], ['r\\_d', '\\'], ['10\\%', '\\'], ['%!%%', '!'], ['_'], [''], ['%'],
  ["it''s"], ['___'], ['%E%'],
];
const ID_LIKES = [['m1%'], ['m_5'], ['%7'], ['m1__'], ['m#_%', '#']];

// A message's values as the reference sees them: {k: 'num', int, v},
// {k: 'str', v}, {k: 'bool', v}; absent = missing (NULL).
function randomMessage(rnd, n) {
  const pick = (arr) => arr[Math.floor(rnd() * arr.length)];
  const present = (p = 0.85) => rnd() < p;
  const intIn = (lo, hi) => lo + Math.floor(rnd() * (hi - lo + 1));
  const values = {};
  const app = {};
  if (present()) {
    const v = intIn(-20, 20);
    values.i = { k: 'num', int: true, v };
    app.i = pick([types.wrap_int, types.wrap_long, types.wrap_short])(v);
  }
  if (present()) {
    const v = intIn(0, 10);
    values.j = { k: 'num', int: true, v };
    app.j = v; // rhea: uint (ubyte, uint0)
  }
  if (present()) {
    const v = Math.round((rnd() * 20 - 10) * 4) / 4; // exact in float and double
    values.f = { k: 'num', int: false, v };
    app.f = pick([types.wrap_double, types.wrap_float])(v);
  }
  if (present()) {
    const v = pick(STRINGS);
    values.s = { k: 'str', v };
    app.s = v;
  }
  if (present(0.8)) {
    const v = rnd() < 0.5;
    values.b = { k: 'bool', v };
    app.b = v;
  }
  // `m`: a number, a string or a boolean (or missing), for comparisons of
  // values of different types.
  const mk = rnd();
  if (mk < 0.3) {
    const v = intIn(-3, 12);
    values.m = { k: 'num', int: true, v };
    app.m = types.wrap_long(v);
  } else if (mk < 0.4) {
    const v = pick([0.5, 2.5, -1.25, 10]);
    values.m = { k: 'num', int: false, v };
    app.m = types.wrap_double(v);
  } else if (mk < 0.75) {
    const v = pick([...STRINGS, ...TYPES]);
    values.m = { k: 'str', v };
    app.m = v;
  } else if (mk < 0.9) {
    const v = rnd() < 0.5;
    values.m = { k: 'bool', v };
    app.m = v;
  }
  const message = { body: n, message_id: `m${n}`, application_properties: app };
  values.JMSMessageID = { k: 'str', v: `m${n}` };
  const durable = rnd() < 0.5;
  if (durable) message.durable = true;
  values.JMSDeliveryMode = { k: 'str', v: durable ? 'PERSISTENT' : 'NON_PERSISTENT' };
  const priority = present(0.6) ? intIn(0, 9) : undefined;
  if (priority !== undefined) message.priority = priority;
  values.JMSPriority = { k: 'num', int: true, v: priority === undefined ? 4 : priority };
  if (present(0.7)) {
    message.subject = pick(TYPES);
    values.JMSType = { k: 'str', v: message.subject };
  }
  return { message, values };
}

// Selector ASTs. Boolean: and, or, not, cmp, between, like, in, isnull,
// boolid, eq (an identifier against a string or boolean literal). Values:
// id, lit (a number; k 'str' or 'bool' for the others), neg, arith. The
// operands of cmp, between, like and in may be of any type: values of
// different types compare as JMS 3.8.1.2 and Artemis say (see compareVals).
function selectorGenerator(rnd) {
  const pick = (arr) => arr[Math.floor(rnd() * arr.length)];
  const intIn = (lo, hi) => lo + Math.floor(rnd() * (hi - lo + 1));
  const FLOATS = [['0.5', 0.5], ['1.5', 1.5], ['-2.25', -2.25], ['2.5', 2.5], ['7.75', 7.75], ['1E1', 10],
    ['25E-1', 2.5], ['.5', 0.5], ['0.25', 0.25], ['3.0', 3]];
  const intLit = (lo, hi) => {
    const v = intIn(lo, hi);
    return { t: 'lit', int: true, v, text: String(v) };
  };
  const floatLit = () => {
    const [text, v] = pick(FLOATS);
    return { t: 'lit', int: false, v, text };
  };
  const numLit = () => (rnd() < 0.7 ? intLit(-5, 15) : floatLit());
  const numId = () => ({
    t: 'id', name: rnd() < 0.03 ? 'nope' : pick(['i', 'i', 'i', 'j', 'j', 'f', 'f', 'f', 'JMSPriority']),
  });
  const num = (depth) => {
    if (depth <= 0 || rnd() < 0.45) return rnd() < 0.7 ? numId() : numLit();
    const r = rnd();
    if (r < 0.12) return { t: 'neg', a: num(depth - 1) };
    const op = pick(['+', '-', '*', '/']);
    if (op === '/') {
      const d = rnd() < 0.7 ? pick([1, 2, 3, 4, -3]) : null;
      const b = d === null ? floatLit() : { t: 'lit', int: true, v: d, text: String(d) };
      if (b.v === 0) b.v = 1;
      return { t: 'arith', op, a: num(depth - 1), b };
    }
    return { t: 'arith', op, a: num(depth - 1), b: num(depth - 1) };
  };
  const strItem = (x) => (x === 'JMSMessageID' ? `m${intIn(0, 30)}` : pick(x === 'JMSType' ? TYPES : STRINGS));
  const OPS = ['=', '<>', '<', '>', '<=', '>='];
  const strLit = (v) => ({ t: 'lit', k: 'str', v, text: quote(v) });
  const boolLit = (v) => ({ t: 'lit', k: 'bool', v, text: kw(v ? 'TRUE' : 'FALSE') });
  // A literal of any type.
  const anyLit = () => {
    const r = rnd();
    if (r < 0.4) return numLit();
    if (r < 0.85) return strLit(pick(rnd() < 0.8 ? STRINGS : TYPES));
    return boolLit(rnd() < 0.5);
  };
  // An identifier of any type (m is of a different type on each message).
  const anyId = () => ({
    t: 'id', name: pick(['i', 'j', 'f', 's', 's', 'b', 'm', 'm', 'm', 'JMSType', 'JMSPriority', 'JMSDeliveryMode', 'nope']),
  });
  // For LIKE and IN: mostly a string, sometimes anything.
  const strOrAnyName = (names) => (rnd() < 0.75 ? pick(names) : pick(['i', 'f', 'b', 'm', 'm', 'JMSPriority', 'nope']));
  const predicate = () => {
    const r = rnd();
    if (r < 0.26) {
      return {
        t: 'cmp', op: pick(OPS), a: num(2), b: rnd() < 0.7 ? numLit() : num(1),
      };
    }
    if (r < 0.34) {
      const lo = numLit();
      const hi = rnd() < 0.8 ? { t: 'lit', int: true, v: Math.ceil(lo.v) + intIn(0, 12), text: '' } : numLit();
      if (hi.text === '') hi.text = String(hi.v);
      return { t: 'between', neg: rnd() < 0.35, x: num(1), lo, hi };
    }
    if (r < 0.39) {
      // Between strings (lexical order), on anything; or bounds of any type.
      const x = rnd() < 0.6 ? { t: 'id', name: pick(['s', 's', 'JMSType', 'JMSMessageID', 'm']) } : anyId();
      if (rnd() < 0.7) {
        const [lo, hi] = [strItem(x.name), strItem(x.name)].sort();
        return { t: 'between', neg: rnd() < 0.35, x, lo: strLit(lo), hi: strLit(hi) };
      }
      return { t: 'between', neg: rnd() < 0.35, x, lo: anyLit(), hi: anyLit() };
    }
    if (r < 0.48) {
      const x = strOrAnyName(['s', 's', 's', 'JMSType', 'JMSMessageID']);
      const [pat, esc] = pick(x === 'JMSMessageID' ? ID_LIKES : LIKES);
      return { t: 'like', neg: rnd() < 0.35, x, pat: pat.replace(/''/g, "'"), esc };
    }
    if (r < 0.56) {
      const x = strOrAnyName(['s', 's', 'JMSType', 'JMSMessageID', 'JMSDeliveryMode']);
      const items = Array.from({ length: intIn(1, 3) }, () => (x === 'JMSDeliveryMode'
        ? pick(['PERSISTENT', 'NON_PERSISTENT']) : strItem(x)));
      return { t: 'in', neg: rnd() < 0.35, x, items };
    }
    if (r < 0.64) {
      return { t: 'isnull', neg: rnd() < 0.5, name: pick(['i', 'j', 'f', 's', 's', 'b', 'b', 'm', 'JMSType', 'nope']) };
    }
    if (r < 0.69) return { t: 'boolid', name: pick(['b', 'b', 'b', 'm']) };
    if (r < 0.74) {
      const op = rnd() < 0.85 ? pick(['=', '<>']) : pick(OPS); // booleans are not ordered: false
      return { t: 'eq', op, name: pick(['b', 'b', 'b', 'm']), lit: boolLit(rnd() < 0.5) };
    }
    if (r < 0.84) {
      // Strings: (in)equality and lexical order.
      const name = pick(['s', 's', 'JMSType', 'JMSDeliveryMode', 'JMSMessageID', 'm']);
      const op = rnd() < 0.4 ? pick(['=', '<>']) : pick(OPS);
      if (rnd() < 0.1) return { t: 'cmp', op, a: { t: 'id', name }, b: { t: 'id', name: pick(['s', 'JMSType', 'm']) } };
      const v = name === 'JMSDeliveryMode' ? pick(['PERSISTENT', 'NON_PERSISTENT']) : strItem(name);
      return { t: 'eq', op, name, lit: strLit(v) };
    }
    // Anything against a literal of any type: a type mismatch is = false,
    // <> true, ordering false.
    const a = rnd() < 0.75 ? anyId() : num(1);
    const b = anyLit();
    return rnd() < 0.25 ? { t: 'cmp', op: pick(OPS), a: b, b: a } : { t: 'cmp', op: pick(OPS), a, b };
  };
  const bool = (depth) => {
    if (depth <= 0 || rnd() < 0.3) return predicate();
    const r = rnd();
    if (r < 0.4) return { t: 'and', a: bool(depth - 1), b: bool(depth - 1) };
    if (r < 0.75) return { t: 'or', a: bool(depth - 1), b: bool(depth - 1) };
    return { t: 'not', a: bool(depth - 1) };
  };

  // Rendering: parentheses where precedence needs them (and sometimes where
  // it does not); keywords in random case.
  const kw = (w) => {
    const r = rnd();
    if (r < 0.7) return w;
    if (r < 0.85) return w.toLowerCase();
    return w[0] + w.slice(1).toLowerCase();
  };
  const quote = (s) => `'${s.replace(/'/g, "''")}'`;
  const PREC = { or: 1, and: 2, not: 3, pred: 4, sum: 5, product: 6, unary: 7, primary: 8 };
  const wrap = ([text, prec], min) => (prec < min || rnd() < 0.08 ? `(${text})` : text);
  const render = (e) => {
    switch (e.t) {
      case 'or': return [`${wrap(render(e.a), PREC.or)} ${kw('OR')} ${wrap(render(e.b), PREC.and)}`, PREC.or];
      case 'and': return [`${wrap(render(e.a), PREC.and)} ${kw('AND')} ${wrap(render(e.b), PREC.not)}`, PREC.and];
      case 'not': return [`${kw('NOT')} ${wrap(render(e.a), PREC.not)}`, PREC.not];
      case 'cmp': return [`${wrap(render(e.a), PREC.sum)} ${e.op} ${wrap(render(e.b), PREC.sum)}`, PREC.pred];
      case 'between':
        return [`${wrap(render(e.x), PREC.sum)} ${e.neg ? `${kw('NOT')} ` : ''}${kw('BETWEEN')} ${
          wrap(render(e.lo), PREC.sum)} ${kw('AND')} ${wrap(render(e.hi), PREC.sum)}`, PREC.pred];
      case 'like':
        return [`${e.x} ${e.neg ? `${kw('NOT')} ` : ''}${kw('LIKE')} ${quote(e.pat)}${
          e.esc ? ` ${kw('ESCAPE')} ${quote(e.esc)}` : ''}`, PREC.pred];
      case 'in':
        return [`${e.x} ${e.neg ? `${kw('NOT')} ` : ''}${kw('IN')} (${e.items.map(quote).join(', ')})`, PREC.pred];
      case 'isnull': return [`${e.name} ${kw('IS')} ${e.neg ? `${kw('NOT')} ` : ''}${kw('NULL')}`, PREC.pred];
      case 'boolid': return [e.name, PREC.primary];
      case 'eq': return [`${e.name} ${e.op} ${e.lit.text}`, PREC.pred];
      case 'id': return [e.name, PREC.primary];
      case 'lit': return [e.text, e.text.startsWith('-') ? PREC.unary : PREC.primary];
      case 'neg': {
        const [text, prec] = render(e.a);
        return [`-${prec < PREC.unary || text.startsWith('-') ? `(${text})` : text}`, PREC.unary];
      }
      case 'arith': {
        const p = e.op === '+' || e.op === '-' ? PREC.sum : PREC.product;
        return [`${wrap(render(e.a), p)} ${e.op} ${wrap(render(e.b), p + 1)}`, p];
      }
      default: throw new Error(`unknown node ${e.t}`);
    }
  };
  return { next: () => { const ast = bool(3); return { ast, text: render(ast)[0] }; } };
}

function likeRegExp(pat, esc) {
  let re = '';
  for (let i = 0; i < pat.length; i++) {
    const c = pat[i];
    if (esc !== undefined && c === esc && i + 1 < pat.length) {
      re += pat[++i].replace(/[.*+?^${}()|[\]\\/]/g, '\\$&');
    } else if (c === '%') {
      re += '.*';
    } else if (c === '_') {
      re += '.';
    } else {
      re += c.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&');
    }
  }
  return new RegExp(`^${re}$`, 's');
}

// The reference: true, false or null (unknown) for boolean nodes; a value
// ({k: 'num', int, v}, {k: 'str', v}, {k: 'bool', v}) or null (NULL, or
// arithmetic on a non-number) for the others. JMS 2.0 §3.8.1, with values of
// different types compared as JMS 3.8.1.2, ActiveMQ and Artemis do.
function evalVal(e, vals) {
  switch (e.t) {
    case 'id': return vals[e.name] || null;
    case 'lit': return e.k === 'str' || e.k === 'bool' ? { k: e.k, v: e.v } : { k: 'num', int: e.int, v: e.v };
    case 'neg': {
      const a = evalVal(e.a, vals);
      return a && a.k === 'num' ? { k: 'num', int: a.int, v: -a.v } : null;
    }
    case 'arith': {
      const a = evalVal(e.a, vals);
      const b = evalVal(e.b, vals);
      if (!a || !b || a.k !== 'num' || b.k !== 'num') return null;
      const int = a.int && b.int;
      switch (e.op) {
        case '+': return { k: 'num', int, v: a.v + b.v };
        case '-': return { k: 'num', int, v: a.v - b.v };
        case '*': return { k: 'num', int, v: a.v * b.v };
        default:
          if (int) return b.v === 0 ? null : { k: 'num', int, v: Math.trunc(a.v / b.v) };
          return { k: 'num', int, v: a.v / b.v };
      }
    }
    default: throw new Error(`not a value: ${e.t}`);
  }
}

// A comparison: unknown (null) only with a NULL. Values of different types
// are never equal (= false, <> true) and never ordered (false); numbers
// compare across widths, strings lexically (JS compares UTF-16 units: the
// same as Rust's bytes for these ASCII strings), booleans only for = and <>.
function compareVals(op, a, b) {
  if (!a || !b) return null;
  if (a.k !== b.k) return op === '<>';
  if (a.k === 'bool' && op !== '=' && op !== '<>') return false;
  switch (op) {
    case '=': return a.v === b.v;
    case '<>': return a.v !== b.v;
    case '<': return a.v < b.v;
    case '>': return a.v > b.v;
    case '<=': return a.v <= b.v;
    case '>=': return a.v >= b.v;
    default: throw new Error(`unknown operator ${op}`);
  }
}

function evalBool(e, vals) {
  switch (e.t) {
    case 'and': {
      const a = evalBool(e.a, vals);
      const b = evalBool(e.b, vals);
      if (a === false || b === false) return false;
      return a === true && b === true ? true : null;
    }
    case 'or': {
      const a = evalBool(e.a, vals);
      const b = evalBool(e.b, vals);
      if (a === true || b === true) return true;
      return a === false && b === false ? false : null;
    }
    case 'not': {
      const a = evalBool(e.a, vals);
      return a === null ? null : !a;
    }
    case 'cmp': return compareVals(e.op, evalVal(e.a, vals), evalVal(e.b, vals));
    case 'between': {
      // `x >= lo AND x <= hi`; NOT BETWEEN is `x < lo OR x > hi`, so a
      // value of another type is in neither.
      const x = evalVal(e.x, vals);
      const lo = evalVal(e.lo, vals);
      const hi = evalVal(e.hi, vals);
      if (!x || !lo || !hi) return null;
      if (e.neg) return compareVals('<', x, lo) || compareVals('>', x, hi);
      return compareVals('>=', x, lo) && compareVals('<=', x, hi);
    }
    // LIKE and IN on a value that is not a string: false (NOT: true).
    case 'like': {
      const v = vals[e.x];
      if (!v) return null;
      if (v.k !== 'str') return e.neg;
      return likeRegExp(e.pat, e.esc).test(v.v) !== e.neg;
    }
    case 'in': {
      const v = vals[e.x];
      if (!v) return null;
      if (v.k !== 'str') return e.neg;
      return e.items.includes(v.v) !== e.neg;
    }
    case 'isnull': return (vals[e.name] === undefined) !== e.neg;
    case 'boolid': {
      const v = vals[e.name];
      return v && v.k === 'bool' ? v.v : null;
    }
    case 'eq': return compareVals(e.op, vals[e.name] || null, e.lit);
    default: throw new Error(`not boolean: ${e.t}`);
  }
}

test('the reference evaluator agrees with hand-checked cases', () => {
  const vals = {
    i: { k: 'num', int: true, v: 3 }, f: { k: 'num', int: false, v: 2.5 }, s: { k: 'str', v: 'r_d' },
    b: { k: 'bool', v: false },
  };
  const id = (name) => ({ t: 'id', name });
  const num = (v) => ({ t: 'lit', int: Number.isInteger(v), v, text: String(v) });
  const str = (v) => ({ t: 'lit', k: 'str', v, text: `'${v}'` });
  const bool = (v) => ({ t: 'lit', k: 'bool', v, text: String(v) });
  const cmp = (op, a, b) => ({ t: 'cmp', op, a, b });
  const cases = [
    [cmp('>', id('i'), num(2)), true],
    [cmp('=', id('i'), num(3.0)), true],
    [{ t: 'not', a: cmp('>', id('nope'), num(2)) }, null],
    [{ t: 'and', a: cmp('>', id('nope'), num(2)), b: { t: 'boolid', name: 'b' } }, false],
    [{ t: 'or', a: cmp('>', id('nope'), num(2)), b: { t: 'boolid', name: 'b' } }, null],
    // Different types: = false, <> true, ordering false; NULL unknown.
    [cmp('=', id('s'), num(1)), false],
    [cmp('<>', id('s'), num(1)), true],
    [{ t: 'not', a: cmp('=', id('s'), num(1)) }, true],
    [cmp('>', id('i'), str('2')), false],
    [cmp('<=', str('2'), id('i')), false],
    [cmp('=', id('b'), num(0)), false],
    [cmp('<>', id('b'), num(0)), true],
    [cmp('<', id('b'), bool(true)), false],
    [cmp('<>', id('nope'), str('x')), null],
    [{ t: 'eq', op: '<>', name: 'b', lit: str('false') }, true],
    // Strings order lexically.
    [cmp('<', id('s'), str('s')), true],
    [cmp('<', id('s'), str('r')), false],
    [cmp('>', id('s'), str('R_D')), true],
    [{ t: 'eq', op: '>=', name: 's', lit: str('r_d') }, true],
    // LIKE / IN on a non-string: false; NOT: true; NULL: unknown.
    [{ t: 'like', neg: false, x: 'i', pat: '%' }, false],
    [{ t: 'like', neg: true, x: 'i', pat: '%' }, true],
    [{ t: 'like', neg: true, x: 'nope', pat: '%' }, null],
    [{ t: 'in', neg: false, x: 'b', items: ['false'] }, false],
    [{ t: 'in', neg: true, x: 'b', items: ['false'] }, true],
    // BETWEEN: x >= lo AND x <= hi; NOT BETWEEN: x < lo OR x > hi.
    [{ t: 'between', neg: false, x: id('s'), lo: num(1), hi: num(5) }, false],
    [{ t: 'between', neg: true, x: id('s'), lo: num(1), hi: num(5) }, false],
    [{ t: 'between', neg: false, x: id('s'), lo: str('r'), hi: str('s') }, true],
    [{ t: 'between', neg: true, x: id('i'), lo: str('x'), hi: num(2) }, true],
    [{ t: 'between', neg: true, x: id('i'), lo: num(1), hi: id('nope') }, null],
  ];
  const wrong = cases.filter(([e, want]) => evalBool(e, vals) !== want)
    .map(([e, want]) => `${JSON.stringify(e)}: expected ${want}, got ${evalBool(e, vals)}`);
  assert.deepEqual(wrong, []);
});

test('random selectors agree with a reference evaluator (seeded)', (t) => withBroker(async (broker) => {
  const seed = process.env.JMS_SEED ? Number(process.env.JMS_SEED) : (Date.now() ^ (process.pid << 16)) >>> 0;
  const note = `selector fuzz seed ${seed} (replay: JMS_SEED=${seed} node --test test/jms.test.js)`;
  console.log(note);
  t.diagnostic(note);
  const rnd = mulberry32(seed);
  const generated = Array.from({ length: 200 }, (_, n) => randomMessage(rnd, n));
  const gen = selectorGenerator(rnd);
  const selectors = [];
  const seen = new Set();
  while (selectors.length < 30) {
    const s = gen.next();
    if (!seen.has(s.text)) {
      seen.add(s.text);
      selectors.push(s);
    }
  }
  const topic = `topic://${queueName('selector-fuzz')}`;
  const conn = await connect(broker);
  try {
    const subs = [];
    for (const s of selectors) {
      const sub = await consumer(conn, { address: topic, filter: selectorFilter(s.text) });
      assertEchoedSelector(sub.receiver, 'jms-selector', s.text, SELECTOR_CODE);
      subs.push(sub.receiver);
    }
    const control = await consumer(conn, { address: topic });
    await publish(broker, topic, generated.map((g) => g.message));
    const mismatches = [];
    let proper = 0;
    for (const [k, s] of selectors.entries()) {
      const got = bodiesOf(await drain(subs[k], 300)).sort((a, b) => a - b);
      const want = generated.filter((g) => evalBool(s.ast, g.values) === true).map((g) => g.message.body);
      if (want.length > 0 && want.length < generated.length) proper++;
      if (process.env.JMS_VERBOSE) t.diagnostic(`${want.length}/${generated.length}: ${s.text}`);
      if (JSON.stringify(got) !== JSON.stringify(want)) {
        const missing = want.filter((n) => !got.includes(n));
        const extra = got.filter((n) => !want.includes(n));
        const show = (n) => JSON.stringify(generated[n].values);
        mismatches.push(`selector ${JSON.stringify(s.text)}: expected ${want.length}, got ${got.length}; `
          + `missing ${JSON.stringify(missing.slice(0, 5))}${missing.length ? ` e.g. m${missing[0]} ${show(missing[0])}` : ''}; `
          + `extra ${JSON.stringify(extra.slice(0, 5))}${extra.length ? ` e.g. m${extra[0]} ${show(extra[0])}` : ''}`);
      }
    }
    assert.equal((await drain(control.receiver, 300)).length, generated.length, 'the control subscription');
    assert.deepEqual(mismatches, [], `${note}: selectors the broker evaluated differently`);
    assert.ok(proper >= 5, `${note}: only ${proper} selectors selected a proper subset (generator too weak)`);
  } finally {
    await close(conn);
  }
}));

// ---------------------------------------------------------------------------
// No-local

test('no-local: messages published on the same connection are not delivered, others are', () => withBroker(async (broker) => {
  const topic = `topic://${queueName('no-local')}`;
  const ca = await connect(broker);
  const cb = await connect(broker);
  try {
    const localA = await consumer(ca, { address: topic, filter: noLocalFilter() });
    const nl = echoedFilter(localA.receiver, 'no-local');
    assert.ok(nl && nl.descriptor && nl.descriptor.value === NO_LOCAL,
      `no-local not echoed: ${JSON.stringify(localA.receiver.remote.attach.source)}`);
    const allA = await consumer(ca, { address: topic });
    // By numeric descriptor, on the other connection.
    const localB = await consumer(cb, { address: topic, filter: noLocalFilter(NO_LOCAL_CODE) });
    assert.ok(echoedFilter(localB.receiver, 'no-local'), 'numeric no-local not echoed');
    const senderA = await openLink(ca, 'sender', { target: { address: topic } });
    const senderB = await openLink(cb, 'sender', { target: { address: topic } });
    for (const [s, body] of [[senderA, 'a1'], [senderA, 'a2'], [senderB, 'b1'], [senderA, 'a3'], [senderB, 'b2']]) {
      assert.equal((await sendOne(s, { body })).outcome, 'accepted');
    }
    // From a third connection too.
    await publish(broker, topic, [{ body: 'c1' }]);
    assert.deepEqual(bodiesOf(await drain(localA.receiver, 10)), ['b1', 'b2', 'c1']);
    assert.deepEqual(bodiesOf(await drain(localB.receiver, 10)), ['a1', 'a2', 'a3', 'c1']);
    assert.deepEqual(bodiesOf(await drain(allA.receiver, 10)), ['a1', 'a2', 'b1', 'a3', 'b2', 'c1']);
  } finally {
    await close(ca);
    await close(cb);
  }
}));

test('no-local together with a selector', () => withBroker(async (broker) => {
  const topic = `topic://${queueName('no-local-selector')}`;
  const ca = await connect(broker);
  try {
    const sub = await consumer(ca, {
      address: topic, filter: { ...noLocalFilter(), ...selectorFilter('n > 1') },
    });
    await sendAll(ca, topic, [1, 2, 3].map((n) => ({ body: `a${n}`, application_properties: { n } })));
    await publish(broker, topic, [1, 2, 3].map((n) => ({ body: `b${n}`, application_properties: { n } })));
    assert.deepEqual(bodiesOf(await drain(sub.receiver, 10)), ['b2', 'b3']);
  } finally {
    await close(ca);
  }
}));

// ---------------------------------------------------------------------------
// Shared subscriptions

// Three consumers of one shared subscription, each with `each` credit, get
// `3 * each` messages: each exactly `each`, none twice, all of them.
async function assertShared(broker, topic, subs, conns, total) {
  for (const [k, s] of subs.entries()) {
    s.receiver.add_credit(total / subs.length);
    await roundTrip(conns[k], topic);
  }
  const bodies = Array.from({ length: total }, (_, i) => `m${i}`);
  await publish(broker, topic, bodies.map((body) => ({ body })));
  await until(() => subs.reduce((n, s) => n + s.arrivals.length, 0) >= total,
    `${total} messages over the shared consumers`);
  const got = subs.map((s) => s.arrivals.map((a) => a.message.body));
  got.forEach((g, k) => assert.equal(g.length, total / subs.length, `consumer ${k} got ${JSON.stringify(g)}`));
  const all = got.flat();
  assert.equal(new Set(all).size, all.length, `a message went to two consumers: ${JSON.stringify(got)}`);
  assert.deepEqual([...all].sort(), [...bodies].sort());
  // Each consumer's share is in publication order.
  for (const g of got) assert.deepEqual(g, [...g].sort((a, b) => Number(a.slice(1)) - Number(b.slice(1))));
  for (const s of subs) assert.deepEqual(bodiesOf(await drain(s.receiver, 10)), [], 'a shared consumer got more');
  return got;
}

test('shared global subscription: consumers sub, sub|2, sub|3 on three connections share one queue', () => withBroker(async (broker) => {
  const topic = `topic://${queueName('shared-global')}`;
  const conns = [];
  try {
    for (let k = 0; k < 4; k++) conns.push(await connect(broker, { container_id: queueName(`c${k}`) }));
    const names = ['sub', 'sub|2', 'sub|3'];
    const subs = [];
    for (const [k, name] of names.entries()) {
      subs.push(await consumer(conns[k], { address: topic, capabilities: ['shared', 'global'] }, { name }));
    }
    const plain = await consumer(conns[3], { address: topic }, { name: 'sub' });
    await assertShared(broker, topic, subs, conns, 30);
    assert.equal((await drain(plain.receiver, 50)).length, 30, 'a plain subscriber gets its own copy of all');
    // A non-durable shared subscription goes with its last consumer.
    for (const s of subs) await closeLink(s.receiver);
    await publish(broker, topic, [{ body: 'nobody' }]);
    const again = await consumer(conns[0], { address: topic, capabilities: ['shared', 'global'] }, { name: 'sub' });
    assert.deepEqual(bodiesOf(await drain(again.receiver, 10)), [], 'the shared subscription outlived its consumers');
  } finally {
    for (const c of conns) await close(c);
  }
}));

test('shared subscription without global is scoped to the container-id', () => withBroker(async (broker) => {
  const topic = `topic://${queueName('shared-scoped')}`;
  const cidA = queueName('client-a');
  const a1 = await connect(broker, { container_id: cidA });
  const a2 = await connect(broker, { container_id: cidA });
  const b = await connect(broker, { container_id: queueName('client-b') });
  try {
    const sa1 = await consumer(a1, { address: topic, capabilities: ['shared'] }, { name: 'sub' });
    const sa2 = await consumer(a2, { address: topic, capabilities: ['shared'] }, { name: 'sub|2' });
    const sb = await consumer(b, { address: topic, capabilities: ['shared'] }, { name: 'sub' });
    sb.receiver.add_credit(20);
    await roundTrip(b, topic);
    await assertShared(broker, topic, [sa1, sa2], [a1, a2], 10);
    await until(() => sb.arrivals.length >= 10, 'the other container\'s subscription');
    assert.deepEqual(sb.arrivals.map((x) => x.message.body), Array.from({ length: 10 }, (_, i) => `m${i}`));
  } finally {
    await close(a1);
    await close(a2);
    await close(b);
  }
}));

test('shared subscription: a consumer with another selector is refused while the subscription has consumers', () => withBroker(async (broker) => {
  const topic = `topic://${queueName('shared-selector')}`;
  const conn = await connect(broker);
  const other = await connect(broker);
  try {
    const source = (sel) => ({ address: topic, capabilities: ['shared', 'global'], filter: selectorFilter(sel) });
    const a = await consumer(conn, source('n > 1'), { name: 'sub' });
    const b = await consumer(other, source('n > 1'), { name: 'sub|2' });
    await assertRefused(other, { name: 'sub|3', source: source('n > 5') }, 'amqp:precondition-failed');
    a.receiver.add_credit(10);
    b.receiver.add_credit(10);
    await roundTrip(conn, topic);
    await roundTrip(other, topic);
    await publish(broker, topic, [1, 2, 3, 4].map((n) => ({ body: `n${n}`, application_properties: { n } })));
    await until(() => a.arrivals.length + b.arrivals.length >= 3, 'the selected messages');
    await drain(a.receiver);
    await drain(b.receiver);
    const got = [...a.arrivals, ...b.arrivals].map((x) => x.message.body).sort();
    assert.deepEqual(got, ['n2', 'n3', 'n4']);
  } finally {
    await close(conn);
    await close(other);
  }
}));

for (const scope of ['global', 'same container-id']) {
  test(`shared durable subscription (${scope}): three consumers share; detached, it keeps what was published`, () => withBroker(async (broker) => {
    const topic = `topic://${queueName('shared-durable')}`;
    const global = scope === 'global';
    const cid = queueName('shared-durable-client');
    const source = {
      address: topic, durable: 2, expiry_policy: 'never', capabilities: global ? ['shared', 'global'] : ['shared'],
    };
    const names = ['sub', 'sub|2', 'sub|3'];
    const conns = [];
    try {
      for (let k = 0; k < 3; k++) {
        conns.push(await connect(broker, { container_id: global ? queueName(`c${k}`) : cid }));
      }
      const subs = [];
      for (const [k, name] of names.entries()) subs.push(await consumer(conns[k], source, { name }));
      assert.equal(subs[0].receiver.remote.attach.source.durable, 2, 'the broker did not echo the durable source');
      await assertShared(broker, topic, subs, conns, 30);

      // All three away (detach with closed=false), not unsubscribed.
      for (const s of subs) {
        await withTimeout(new Promise((resolve) => {
          s.receiver.once('receiver_close', resolve);
          s.receiver.detach();
        }), 'detach');
      }
      const later = Array.from({ length: 7 }, (_, i) => ({ body: `later${i}` }));
      await publish(broker, topic, later);

      const back = await consumer(conns[1], source, { name: 'sub|2' });
      assert.deepEqual(bodiesOf(await drain(back.receiver, 20)), later.map((m) => m.body),
        'the reattached consumer should get what was published while all were away');
      await closeLink(back.receiver); // closed=true, the last consumer: unsubscribed
      await publish(broker, topic, [{ body: 'after-unsubscribe' }]);
      const again = await consumer(conns[0], source, { name: 'sub' });
      assert.deepEqual(bodiesOf(await drain(again.receiver, 10)), [], 'the unsubscribed subscription kept messages');
      await closeLink(again.receiver);
    } finally {
      for (const c of conns) await close(c);
    }
  }));
}

// ---------------------------------------------------------------------------
// Scheduled delivery

test('x-opt-delivery-delay: not early, not much late; a later message without delay overtakes it', () => withBroker(async (broker) => {
  const q = queueName('delivery-delay');
  const conn = await connect(broker);
  try {
    const r = await consumer(conn, { address: q });
    r.receiver.add_credit(10);
    await roundTrip(conn, q);
    const sender = await openLink(conn, 'sender', { target: { address: q } });
    const t0 = Date.now();
    const first = await sendOne(sender, {
      body: 'delayed', message_annotations: { 'x-opt-delivery-delay': types.wrap_long(1000) },
    });
    assert.equal(first.outcome, 'accepted');
    assert.equal((await sendOne(sender, { body: 'now' })).outcome, 'accepted');
    await until(() => r.arrivals.length >= 2, 'both messages', 4000);
    assert.deepEqual(r.arrivals.map((a) => a.message.body), ['now', 'delayed']);
    const late = r.arrivals[1].at - t0;
    assert.ok(late >= 1000, `the delayed message came after ${late} ms, before its 1000 ms delay`);
    assert.ok(late <= 1500, `the delayed message came after ${late} ms (delay 1000 ms)`);
    assert.ok(r.arrivals[0].at - t0 < 500, 'the undelayed message was held back');
  } finally {
    await close(conn);
  }
}));

test('x-opt-delivery-time (long and timestamp): invisible to a drain before it is due; in the past: at once', () => withBroker(async (broker) => {
  const q = queueName('delivery-time');
  const conn = await connect(broker);
  try {
    const base = Date.now();
    const atLong = base + 1100;
    const atStamp = base + 800;
    await sendAll(conn, q, [
      { body: 'long', message_annotations: { 'x-opt-delivery-time': types.wrap_long(atLong) } },
      { body: 'timestamp', message_annotations: { 'x-opt-delivery-time': types.wrap_timestamp(atStamp) } },
      { body: 'past', message_annotations: { 'x-opt-delivery-time': types.wrap_long(base - 60000) } },
      { body: 'plain' },
    ]);
    const r = await consumer(conn, { address: q });
    assert.deepEqual(bodiesOf(await drain(r.receiver, 10)), ['past', 'plain'],
      'only the messages already due should be there');
    assert.ok(Date.now() < atStamp, 'the test was too slow to check that nothing came early');
    r.arrivals.length = 0;
    r.receiver.add_credit(10);
    await until(() => r.arrivals.length >= 2, 'the scheduled messages', 4000);
    assert.deepEqual(r.arrivals.map((a) => a.message.body), ['timestamp', 'long']);
    const [stamp, long] = r.arrivals;
    assert.ok(stamp.at >= atStamp, `timestamp: ${atStamp - stamp.at} ms early`);
    assert.ok(stamp.at <= atStamp + 500, `timestamp: ${stamp.at - atStamp} ms late`);
    assert.ok(long.at >= atLong, `long: ${atLong - long.at} ms early`);
    assert.ok(long.at <= atLong + 500, `long: ${long.at - atLong} ms late`);
  } finally {
    await close(conn);
  }
}));

test('scheduled delivery on a topic: each subscription gets its copy when due', () => withBroker(async (broker) => {
  const topic = `topic://${queueName('scheduled-topic')}`;
  const conn = await connect(broker);
  try {
    const subs = [await consumer(conn, { address: topic }), await consumer(conn, { address: topic })];
    for (const s of subs) s.receiver.add_credit(5);
    await roundTrip(conn, topic);
    const t0 = Date.now();
    await publish(broker, topic, [
      { body: 'later', message_annotations: { 'x-opt-delivery-delay': types.wrap_long(500) } },
      { body: 'now' },
    ]);
    for (const s of subs) {
      await until(() => s.arrivals.length >= 2, 'both copies', 3000);
      assert.deepEqual(s.arrivals.map((a) => a.message.body), ['now', 'later']);
      const at = s.arrivals[1].at - t0;
      assert.ok(at >= 500 && at <= 1000, `the delayed copy came after ${at} ms (delay 500 ms)`);
    }
  } finally {
    await close(conn);
  }
}));

test('a durable scheduled message survives a restart and still waits until due', () => withBroker(async (broker) => {
  const q = queueName('scheduled-restart');
  const conn = await connect(broker);
  let due;
  try {
    due = Date.now() + 1500;
    await sendAll(conn, q, [
      { body: 'scheduled', durable: true, message_annotations: { 'x-opt-delivery-time': types.wrap_long(due) } },
      { body: 'plain', durable: true },
    ]);
  } finally {
    await close(conn);
  }
  await broker.crashAndRestart();
  const again = await connect(broker);
  try {
    const r = await consumer(again, { address: q });
    assert.ok(Date.now() < due - 200, 'the restart took too long to check that nothing came early');
    assert.deepEqual(bodiesOf(await drain(r.receiver, 10)), ['plain'], 'only the due message after the restart');
    r.arrivals.length = 0;
    r.receiver.add_credit(10);
    await until(() => r.arrivals.length >= 1, 'the scheduled message after the restart', 4000);
    const at = r.arrivals[0].at;
    assert.equal(r.arrivals[0].message.body, 'scheduled');
    assert.ok(at >= due, `delivered ${due - at} ms early after the restart`);
    assert.ok(at <= due + 500, `delivered ${at - due} ms late after the restart`);
  } finally {
    await close(again);
  }
}));

// ---------------------------------------------------------------------------
// Redelivery delay

const REDELIVERY_CONFIG = `${DEFAULT_CONFIG}
[[queues]]
pattern = "redeliver.#"
redelivery-delay = "500ms"
`;

test('redelivery-delay (config): a failed delivery waits, others pass it; released and plain modified come back at once', () => withBroker(async (broker) => {
  const q = `redeliver.${queueName('config')}`;
  const conn = await connect(broker);
  try {
    await sendAll(conn, q, ['m0', 'm1', 'm2', 'm3'].map((body) => ({ body })));
    const r = await consumer(conn, { address: q }, { autoaccept: false });
    r.receiver.add_credit(1);
    const m0 = await r.inbox.next('m0');
    assert.equal(m0.message.body, 'm0');
    const t0 = Date.now();
    m0.delivery.modified({ delivery_failed: true });
    r.receiver.add_credit(3);
    const passing = [await r.inbox.next('m1'), await r.inbox.next('m2'), await r.inbox.next('m3')];
    // (m0, had it been put back at once, would have come first.)
    assert.deepEqual(passing.map((g) => g.message.body), ['m1', 'm2', 'm3']);
    // released: back at once, first in line; modified without delivery-failed too.
    let t1 = Date.now();
    passing[0].delivery.release();
    r.receiver.add_credit(1);
    const m1 = await r.inbox.next('m1 again');
    assert.deepEqual([m1.message.body, count(m1.message)], ['m1', 0]);
    assert.ok(Date.now() - t1 < 400, `released m1 came back after ${Date.now() - t1} ms`);
    t1 = Date.now();
    m1.delivery.modified({ delivery_failed: false });
    r.receiver.add_credit(1);
    const m1b = await r.inbox.next('m1 once more');
    assert.deepEqual([m1b.message.body, count(m1b.message)], ['m1', 0]);
    assert.ok(Date.now() - t1 < 400, `modified (not failed) m1 came back after ${Date.now() - t1} ms`);
    for (const g of [m1b, passing[1], passing[2]]) g.delivery.accept();
    r.receiver.add_credit(5);
    const back = await r.inbox.next('m0 after its delay');
    const waited = Date.now() - t0;
    assert.deepEqual([back.message.body, count(back.message)], ['m0', 1]);
    assert.ok(waited >= 500, `m0 came back after ${waited} ms, before its 500 ms delay`);
    assert.ok(waited <= 1000, `m0 came back after ${waited} ms (delay 500 ms)`);
    back.delivery.accept();
    assert.deepEqual(bodiesOf(await drain(r.receiver)), []);
  } finally {
    await close(conn);
  }
}, REDELIVERY_CONFIG));

test('redelivery-delay: unsettled when the consumer went away counts as failed', () => withBroker(async (broker) => {
  const q = `redeliver.${queueName('detached')}`;
  const conn = await connect(broker);
  try {
    await sendAll(conn, q, [{ body: 'm0' }, { body: 'm1' }]);
    const gone = await consumer(conn, { address: q }, { autoaccept: false });
    gone.receiver.add_credit(1);
    assert.equal((await gone.inbox.next('m0')).message.body, 'm0');
    const t0 = Date.now();
    await closeLink(gone.receiver); // m0 unsettled
    const r = await consumer(conn, { address: q });
    r.receiver.add_credit(5);
    await until(() => r.arrivals.length >= 2, 'm1 and m0', 3000);
    assert.deepEqual(r.arrivals.map((a) => [a.message.body, count(a.message)]), [['m1', 0], ['m0', 1]]);
    const waited = r.arrivals[1].at - t0;
    assert.ok(waited >= 500 && waited <= 1000, `m0 came back after ${waited} ms (delay 500 ms)`);
  } finally {
    await close(conn);
  }
}, REDELIVERY_CONFIG));

// A minimal transaction client (see transactions.test.js for the whole
// story: rhea 3.0.5 has no transaction API): a coordinator link whose target
// is replaced by a described coordinator (0x30), declare (0x31) and
// discharge (0x32) sent as hand-encoded amqp-value bodies, declared (0x33)
// decoded here, and a transactional accept as a disposition state (0x34).
const described = (code, fields) => types.described(types.wrap_ulong(code), types.wrap_list(fields));
const descriptorOf = (v) => (v && v.descriptor ? Number(v.descriptor.value) : undefined);
{
  const unwrapOutcome = rhea.message.unwrap_outcome;
  rhea.message.unwrap_outcome = function unwrap(state) {
    if (descriptorOf(state) === 0x33) return { declared: types.unwrap(state.value[0]) };
    return unwrapOutcome(state);
  };
  const terminus = require('rhea/lib/terminus.js');
  const unwrapTerminus = terminus.unwrap;
  terminus.unwrap = function unwrap(field) {
    return descriptorOf(field) === 0x30 ? { coordinator: true } : unwrapTerminus(field);
  };
}

async function coordinator(conn) {
  const link = conn.open_sender({ name: queueName('txn-ctrl') });
  link.local.attach.target = described(0x30, [types.wrap_array(['amqp:local-transactions'], types.Sym8.typecode)]);
  await withTimeout(new Promise((resolve, reject) => {
    link.once('sendable', resolve);
    link.once('sender_close', () => reject(new Error(`coordinator refused: ${JSON.stringify(link.error)}`)));
  }), 'coordinator attach');
  const control = (value, what) => {
    const w = new types.Writer();
    w.write(value);
    const d = link.send(Buffer.concat([Buffer.from([0x00, 0x53, 0x77]), w.toBuffer()]), undefined, 0);
    return withTimeout(new Promise((resolve) => {
      const h = (ctx) => {
        if (ctx.delivery !== d) return;
        link.removeListener('settled', h);
        resolve(d.remote_state);
      };
      link.on('settled', h);
    }), what);
  };
  return {
    async declare() {
      const state = await control(described(0x31, []), 'declare');
      assert.ok(state && Buffer.isBuffer(state.declared), `declare answered ${JSON.stringify(state)}`);
      return state.declared;
    },
    async discharge(txnId, fail) {
      const state = await control(described(0x32, [types.wrap_binary(txnId), fail ? types.True() : types.False()]),
        'discharge');
      assert.equal(state && state.constructor && state.constructor.composite_type, 'accepted',
        `discharge answered ${JSON.stringify(state)}`);
    },
  };
}

const acceptIn = (delivery, txnId) => delivery.update(false,
  described(0x34, [types.wrap_binary(txnId), rhea.message.accepted().described()]));

// Sends `message` on `sender` in transaction `txnId` (transactional-state in
// the transfer, put there by wrapping the session's output); resolves once
// the broker settled it.
function postIn(sender, message, txnId) {
  const session = sender.session;
  if (!session.transferStates) {
    const states = new Map();
    const output = session.output;
    session.output = function withState(frame, payload) {
      const id = frame.constructor.descriptor && frame.constructor.descriptor.numeric === 0x14
        ? frame.delivery_id : undefined;
      if (id !== undefined && states.has(id)) {
        for (let i = 0; i < 7; i++) if (frame.value[i] === undefined) frame.value[i] = types.Null();
        frame.value[7] = states.get(id);
        if (!frame.more) states.delete(id);
      }
      return output.call(this, frame, payload);
    };
    session.transferStates = states;
  }
  const d = sender.send(message);
  session.transferStates.set(d.id, described(0x34, [types.wrap_binary(txnId)]));
  return withTimeout(new Promise((resolve) => {
    const h = (ctx) => {
      if (ctx.delivery !== d) return;
      sender.removeListener('settled', h);
      resolve(d.remote_state);
    };
    sender.on('settled', h);
  }), `the post of ${JSON.stringify(message.body)}`);
}

test('redelivery-delay: a transactional accept rolled back counts as failed', () => withBroker(async (broker) => {
  const q = `redeliver.${queueName('rollback')}`;
  const conn = await connect(broker);
  try {
    await sendAll(conn, q, [{ body: 'm0' }, { body: 'm1' }]);
    const coord = await coordinator(conn);
    const txn = await coord.declare();
    const r = await consumer(conn, { address: q }, { autoaccept: false });
    r.receiver.add_credit(1);
    const m0 = await r.inbox.next('m0');
    assert.equal(m0.message.body, 'm0');
    acceptIn(m0.delivery, txn);
    await roundTrip(conn, q);
    r.arrivals.length = 0;
    const t0 = Date.now();
    await coord.discharge(txn, true);
    r.receiver.add_credit(5);
    await until(() => r.arrivals.length >= 2, 'm1 and m0', 3000);
    assert.deepEqual(r.arrivals.map((a) => [a.message.body, count(a.message)]), [['m1', 0], ['m0', 1]]);
    const waited = r.arrivals[1].at - t0;
    assert.ok(waited >= 500 && waited <= 1000, `m0 came back ${waited} ms after the rollback (delay 500 ms)`);
    r.arrivals.forEach((a) => a.delivery.accept());
  } finally {
    await close(conn);
  }
}, REDELIVERY_CONFIG));

test('redelivery-delay in a group (address option): the group waits for its failed head, order kept', () => withBroker(async (broker) => {
  const q = queueName('redeliver-group');
  const conn = await connect(broker);
  try {
    // This attach creates the queue, with the option in force.
    const r = await consumer(conn, { address: `${q}?queue.redelivery-delay=500ms` }, { autoaccept: false });
    await sendAll(conn, q, ['g1', 'g2', 'g3'].map((body) => ({ body, group_id: 'g' })));
    r.receiver.add_credit(1);
    const g1 = await r.inbox.next('g1');
    assert.equal(g1.message.body, 'g1');
    r.arrivals.length = 0;
    const t0 = Date.now();
    g1.delivery.modified({ delivery_failed: true });
    r.receiver.add_credit(10);
    await until(() => r.arrivals.length >= 3, 'g1, g2, g3', 3000);
    assert.deepEqual(r.arrivals.map((a) => [a.message.body, count(a.message)]), [['g1', 1], ['g2', 0], ['g3', 0]]);
    const waited = r.arrivals[0].at - t0;
    assert.ok(waited >= 500, `g1 came back after ${waited} ms, before its 500 ms delay`);
    assert.ok(waited <= 1000, `g1 came back after ${waited} ms (delay 500 ms)`);
    r.arrivals.forEach((a) => a.delivery.accept());
  } finally {
    await close(conn);
  }
}));

test('redelivery-delay on an exclusive queue: ungrouped messages wait behind the failed head', () => withBroker(async (broker) => {
  const q = queueName('redeliver-exclusive');
  const conn = await connect(broker);
  try {
    const r = await consumer(conn, { address: `${q}?queue.redelivery-delay=500ms&queue.exclusive=true` },
      { autoaccept: false });
    await sendAll(conn, q, ['m0', 'm1', 'm2'].map((body) => ({ body })));
    r.receiver.add_credit(1);
    const m0 = await r.inbox.next('m0');
    r.arrivals.length = 0;
    const t0 = Date.now();
    m0.delivery.modified({ delivery_failed: true });
    r.receiver.add_credit(10);
    await until(() => r.arrivals.length >= 3, 'm0, m1, m2', 3000);
    assert.deepEqual(r.arrivals.map((a) => [a.message.body, count(a.message)]), [['m0', 1], ['m1', 0], ['m2', 0]]);
    const waited = r.arrivals[0].at - t0;
    assert.ok(waited >= 500 && waited <= 1000, `m0 came back after ${waited} ms (delay 500 ms)`);
    r.arrivals.forEach((a) => a.delivery.accept());
  } finally {
    await close(conn);
  }
}));

// ---------------------------------------------------------------------------
// Duplicate detection

const DEDUP_CONFIG = `${DEFAULT_CONFIG}
[[queues]]
pattern = "dedup.#"
duplicate-window = 100

[[queues]]
pattern = "dedup2.#"
duplicate-window = 2

[[queues]]
pattern = "deduptime.#"
duplicate-window = 100
duplicate-window-time = "500ms"
`;

test('duplicate detection: message-id, _AMQ_DUPL_ID (which wins); duplicates accepted and dropped', () => withBroker(async (broker) => {
  const q = `dedup.${queueName('ids')}`;
  const conn = await connect(broker);
  const other = await connect(broker);
  try {
    const { outcomes } = await sendAll(conn, q, [
      { body: 'a', message_id: 'id-a' },
      { body: 'b', message_id: 'id-b' },
      { body: 'a-again', message_id: 'id-a' },
      { body: 'x', message_id: 'id-x', application_properties: { _AMQ_DUPL_ID: 'dup-1' } },
      { body: 'y', message_id: 'id-y', application_properties: { _AMQ_DUPL_ID: 'dup-1' } },
      { body: 'b-by-dupl-id', message_id: 'id-z', application_properties: { _AMQ_DUPL_ID: 'id-b' } },
      { body: 'no-id' },
      { body: 'no-id-2' },
    ]);
    assert.deepEqual(outcomes, Array(8).fill('accepted'), 'a duplicate must be accepted');
    // From another connection, too.
    const more = await sendAll(other, q, [{ body: 'b-other', message_id: 'id-b' }, { body: 'c', message_id: 'id-c' }]);
    assert.deepEqual(more.outcomes, ['accepted', 'accepted']);
    assert.deepEqual(bodiesOf(await fetchAll(broker, q)), ['a', 'b', 'x', 'no-id', 'no-id-2', 'c']);
    // Consumed ids are still remembered.
    await sendAll(conn, q, [{ body: 'a-after', message_id: 'id-a' }, { body: 'd', message_id: 'id-d' }]);
    assert.deepEqual(bodiesOf(await fetchAll(broker, q)), ['d']);
  } finally {
    await close(conn);
    await close(other);
  }
}, DEDUP_CONFIG));

test('duplicate detection by address option; a queue without it keeps duplicates', () => withBroker(async (broker) => {
  const q = queueName('dedup-option');
  const plain = queueName('no-dedup');
  const conn = await connect(broker);
  try {
    const msgs = [{ body: 'a', message_id: 'k' }, { body: 'a2', message_id: 'k' }];
    await sendAll(conn, `${q}?queue.duplicate-window=10`, msgs);
    await sendAll(conn, plain, msgs);
    assert.deepEqual(bodiesOf(await fetchAll(broker, q)), ['a']);
    assert.deepEqual(bodiesOf(await fetchAll(broker, plain)), ['a', 'a2']);
  } finally {
    await close(conn);
  }
}, DEDUP_CONFIG));

test('duplicate detection: the id of a message the queue refused is not remembered', () => withBroker(async (broker) => {
  const q = queueName('dedup-full');
  const conn = await connect(broker);
  try {
    const address = `${q}?queue.duplicate-window=10&queue.max-length=1`;
    const first = await sendAll(conn, address, [{ body: 'a', message_id: 'a' }, { body: 'b', message_id: 'b' }]);
    assert.deepEqual(first.outcomes, ['accepted', 'rejected'], 'the second should be refused: the queue is full');
    assert.deepEqual(bodiesOf(await fetchAll(broker, q)), ['a']);
    const retry = await sendAll(conn, q, [{ body: 'b-retry', message_id: 'b' }]);
    assert.deepEqual(retry.outcomes, ['accepted']);
    assert.deepEqual(bodiesOf(await fetchAll(broker, q)), ['b-retry'],
      'the retry of a refused message was dropped as a duplicate: it is lost');
  } finally {
    await close(conn);
  }
}));

test('duplicate detection and transactions: a rolled back post leaves no id, a committed one does', () => withBroker(async (broker) => {
  const q = `dedup.${queueName('txn')}`;
  const conn = await connect(broker);
  try {
    const coord = await coordinator(conn);
    const sender = await openLink(conn, 'sender', { target: { address: q } });
    const aborted = await coord.declare();
    await postIn(sender, { body: 'p-rolled-back', message_id: 'p' }, aborted);
    await coord.discharge(aborted, true);
    const committed = await coord.declare();
    await postIn(sender, { body: 'c-committed', message_id: 'c' }, committed);
    // A duplicate within the same transaction.
    await postIn(sender, { body: 'c-again-in-txn', message_id: 'c' }, committed);
    await coord.discharge(committed, false);
    const { outcomes } = await sendAll(conn, q, [
      { body: 'p-retry', message_id: 'p' }, { body: 'c-retry', message_id: 'c' },
    ]);
    assert.deepEqual(outcomes, ['accepted', 'accepted']);
    assert.deepEqual(bodiesOf(await fetchAll(broker, q)), ['c-committed', 'p-retry'],
      'a rolled back post must not make its retry a duplicate; a committed one must');
  } finally {
    await close(conn);
  }
}, DEDUP_CONFIG));

test('duplicate-window = 2 remembers the two most recent ids', () => withBroker(async (broker) => {
  const q = `dedup2.${queueName('window')}`;
  const conn = await connect(broker);
  try {
    const ids = ['a', 'b', 'c', 'a', 'c', 'b'];
    const { outcomes } = await sendAll(conn, q, ids.map((id, i) => ({ body: `${id}${i}`, message_id: id })));
    assert.deepEqual(outcomes, Array(ids.length).fill('accepted'));
    // a, b, c; a again (forgotten: the window holds b, c) is new; c is still
    // remembered (window a, c); b was pushed out, new again.
    assert.deepEqual(bodiesOf(await fetchAll(broker, q)), ['a0', 'b1', 'c2', 'a3', 'b5']);
  } finally {
    await close(conn);
  }
}, DEDUP_CONFIG));

test('duplicate-window-time forgets ids after that long', () => withBroker(async (broker) => {
  const q = `deduptime.${queueName('time')}`;
  const conn = await connect(broker);
  try {
    await sendAll(conn, q, [{ body: 'first', message_id: 't' }, { body: 'dup', message_id: 't' }]);
    await sleep(800);
    await sendAll(conn, q, [{ body: 'after-window', message_id: 't' }, { body: 'dup2', message_id: 't' }]);
    assert.deepEqual(bodiesOf(await fetchAll(broker, q)), ['first', 'after-window']);
  } finally {
    await close(conn);
  }
}, DEDUP_CONFIG));

// Restarts the broker on the same data dir: SIGTERM (must exit 0) or SIGKILL.
async function restart(broker, how) {
  if (how === 'SIGKILL') return broker.crashAndRestart();
  broker.proc.kill('SIGTERM');
  const exited = await withTimeout(broker.exitPromise, 'broker exit after SIGTERM', 5000);
  assert.deepEqual(exited, { code: 0, signal: null }, 'broker exit after SIGTERM');
  return broker.start();
}

for (const how of ['SIGTERM', 'SIGKILL']) {
  test(`duplicate detection across a restart (${how}) of a durable queue`, () => withBroker(async (broker) => {
    const q = `dedup.${queueName('restart')}`;
    const ids = ['d0', 'd1', 'd2', 'd3', 'd4'];
    let conn = await connect(broker);
    try {
      const { outcomes } = await sendAll(conn, q, ids.map((id) => ({ body: `first-${id}`, message_id: id, durable: true })));
      assert.deepEqual(outcomes, Array(ids.length).fill('accepted'));
      // d0..d2 consumed, d3 and d4 still queued at the restart.
      const r = await consumer(conn, { address: q });
      assert.deepEqual(bodiesOf(await drain(r.receiver, 3)), ['first-d0', 'first-d1', 'first-d2']);
      await closeLink(r.receiver);
    } finally {
      await close(conn);
    }
    await restart(broker, how);
    conn = await connect(broker);
    try {
      const again = [...ids, 'd5', 'd6'].map((id) => ({ body: `again-${id}`, message_id: id, durable: true }));
      const { outcomes } = await sendAll(conn, q, again);
      assert.deepEqual(outcomes, Array(again.length).fill('accepted'), 'duplicates must be accepted');
    } finally {
      await close(conn);
    }
    let got = bodiesOf(await fetchAll(broker, q));
    if (how === 'SIGKILL') {
      // The accepts of d0..d2 were settled by the client (nothing confirmed
      // them), so a crash may bring those messages back: at least once.
      // Their resent copies must still be dropped.
      got = got.filter((b) => !['first-d0', 'first-d1', 'first-d2'].includes(b));
    }
    assert.deepEqual(got, ['first-d3', 'first-d4', 'again-d5', 'again-d6'],
      'after the restart the old ids must still be known: only d5, d6 are new');
  }, DEDUP_CONFIG));
}

// ---------------------------------------------------------------------------
// Wildcard subscriptions

const WILDCARD_TOPICS = ['prices.eur', 'prices.eur.spot', 'prices', 'orders', 'orders.a', 'orders.a.b', 'other.x'];
const WILDCARD_EXPECT = {
  'prices.*': ['prices.eur'],
  'orders.#': ['orders', 'orders.a', 'orders.a.b'],
  '*.eur': ['prices.eur'],
  '#.b': ['orders.a.b'],
  'prices.#': ['prices.eur', 'prices.eur.spot', 'prices'],
  'orders.*.b': ['orders.a.b'],
};

for (const when of ['after', 'before']) {
  test(`wildcard subscriptions (prices.*, orders.#, ...) made ${when} the topics exist`, () => withBroker(async (broker) => {
    const base = queueName('wild');
    const conn = await connect(broker);
    const pub = await connect(broker);
    try {
      const senders = new Map();
      const openSenders = async () => {
        for (const t of WILDCARD_TOPICS) {
          senders.set(t, await openLink(pub, 'sender', { target: { address: `topic://${base}.${t}` } }));
        }
      };
      if (when === 'after') await openSenders();
      const subs = new Map();
      for (const pattern of Object.keys(WILDCARD_EXPECT)) {
        subs.set(pattern, await consumer(conn, { address: `topic://${base}.${pattern}` }));
      }
      // A plain name with capability topic works as well.
      const byCapability = await consumer(conn, { address: `${base}.prices.*`, capabilities: ['topic'] });
      if (when === 'before') await openSenders();
      for (const t of WILDCARD_TOPICS) {
        assert.equal((await sendOne(senders.get(t), { body: t })).outcome, 'accepted', `publishing to ${t}`);
      }
      for (const [pattern, want] of Object.entries(WILDCARD_EXPECT)) {
        assert.deepEqual(bodiesOf(await drain(subs.get(pattern).receiver, 20)), want, `subscription ${pattern}`);
      }
      assert.deepEqual(bodiesOf(await drain(byCapability.receiver, 20)), ['prices.eur'], 'prices.* by capability');
      // A topic created later joins the existing pattern subscriptions.
      await publish(broker, `topic://${base}.prices.usd`, [{ body: 'prices.usd' }]);
      await publish(broker, `topic://${base}.orders.x.y.z`, [{ body: 'orders.x.y.z' }]);
      assert.deepEqual(bodiesOf(await drain(subs.get('prices.*').receiver, 20)), ['prices.usd']);
      assert.deepEqual(bodiesOf(await drain(subs.get('orders.#').receiver, 20)), ['orders.x.y.z']);
    } finally {
      await close(conn);
      await close(pub);
    }
  }));
}

test('a durable wildcard subscription keeps its pattern across a restart: topics created later join it', () => withBroker(async (broker) => {
  const base = queueName('wild-durable');
  const cid = queueName('wild-durable-client');
  const source = { address: `topic://${base}.orders.#`, durable: 2, expiry_policy: 'never' };
  let conn = await connect(broker, { container_id: cid });
  const sub = await consumer(conn, source, { name: 'orders' });
  await withTimeout(new Promise((resolve) => {
    sub.receiver.once('receiver_close', resolve);
    sub.receiver.detach();
  }), 'detach');
  await close(conn);
  await publish(broker, `topic://${base}.orders.a`, [{ body: 'before', durable: true }]);
  await broker.crashAndRestart();
  await publish(broker, `topic://${base}.orders.b`, [{ body: 'after', durable: true }]);
  await publish(broker, `topic://${base}.orders.a`, [{ body: 'after-a', durable: true }]);
  conn = await connect(broker, { container_id: cid });
  try {
    const back = await consumer(conn, source, { name: 'orders' });
    assert.deepEqual(bodiesOf(await drain(back.receiver, 10)), ['before', 'after', 'after-a']);
    await closeLink(back.receiver);
  } finally {
    await close(conn);
  }
}));

test('wildcard subscription with a selector', () => withBroker(async (broker) => {
  const base = queueName('wild-selector');
  const conn = await connect(broker);
  try {
    const sub = await consumer(conn, { address: `topic://${base}.orders.#`, filter: selectorFilter('n >= 2') });
    assertEchoedSelector(sub.receiver, 'jms-selector', 'n >= 2', SELECTOR_CODE);
    for (const [t, n] of [['orders.a', 1], ['orders.b', 2], ['orders', 3], ['other', 4]]) {
      await publish(broker, `topic://${base}.${t}`, [{ body: `${t}:${n}`, application_properties: { n } }]);
    }
    assert.deepEqual(bodiesOf(await drain(sub.receiver, 10)), ['orders.b:2', 'orders:3']);
  } finally {
    await close(conn);
  }
}));
