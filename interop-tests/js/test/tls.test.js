'use strict';
// TLS through rhea (docs/CONFIG.md `[tls]`): amqps trusting the right CA and
// a wrong one, a client certificate (CN=alice) with SASL EXTERNAL under
// client-auth required, the AMQP TLS upgrade on the plain port, and
// certificates reloaded on SIGHUP.
//
// The certificates come from interop-tests/pki.sh (made once for this file).
// Each broker's directory, its working directory, holds copies of them and
// its config names them by relative path, so a reload test rewrites them in
// place. Connections check the server name `localhost` (node does not send an
// IP address as SNI); the server certificates carry it beside IP:127.0.0.1.
// rhea has no TLS upgrade of its own: the test does the upgrade on a socket
// (TLS header, the broker's echo, node's tls.connect over that socket) and
// hands rhea the TLS socket through its `connect` option.

const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const net = require('node:net');
const os = require('node:os');
const path = require('node:path');
const tls = require('node:tls');

const { withBroker, makePki } = require('../lib/broker');
const {
  close, connect, drain, fetchAll, openLink, queueName, receiveN, sendAll, withTimeout,
} = require('../lib/amqp');

const TLS_HEADER = Buffer.from('AMQP\x02\x01\x00\x00', 'latin1');
const SERVER_NAME = 'localhost';

let pki;
before(() => {
  pki = makePki(fs.mkdtempSync(path.join(os.tmpdir(), 'ordo-rhea-pki-')));
});
after(() => fs.rmSync(pki, { recursive: true, force: true }));

const pkiFile = (name) => path.join(pki, name);
const read = (name) => fs.readFileSync(pkiFile(name));

// Every PKI file, to copy into a broker's directory.
function pkiFiles() {
  return Object.fromEntries(fs.readdirSync(pki)
    .filter((f) => /\.(pem|key)$/.test(f))
    .map((f) => [f, pkiFile(f)]));
}

function tomlValue(v) {
  if (typeof v === 'boolean' || typeof v === 'number') return String(v);
  if (Array.isArray(v)) return `[${v.map(tomlValue).join(', ')}]`;
  return JSON.stringify(String(v));
}

// A config with TLS on (server.pem / server.key from the CA, a free amqps
// port) plus the `tls` overrides; `extra` is appended ([[access]]).
function tlsConfig(overrides = {}, { extra = '' } = {}) {
  const settings = {
    cert: 'server.pem', key: 'server.key', port: 0, ...overrides,
  };
  return `[listener]
address = "127.0.0.1"
port = 0

[tls]
${Object.entries(settings).map(([k, v]) => `${k} = ${tomlValue(v)}`).join('\n')}

[sasl]
allow-anonymous = true

[logging]
level = "info"
format = "text"
${extra}
`;
}

// One [[access]] rule: `names` may do everything on every address.
function accessFor(...names) {
  const who = tomlValue(names);
  return `
[[access]]
pattern = "#"
send = ${who}
receive = ${who}
create = ${who}
`;
}

const withTlsBroker = (fn, config = tlsConfig()) => withBroker(fn, config, { files: pkiFiles() });

// rhea/node TLS options trusting `ca`, presenting the client certificate
// `cert` (e.g. 'alice') with SASL EXTERNAL if given.
function tlsOptions({ ca = 'ca.pem', cert } = {}) {
  const options = { transport: 'tls', ca: [read(ca)], servername: SERVER_NAME };
  if (cert) {
    Object.assign(options, {
      cert: read(`${cert}.pem`), key: read(`${cert}.key`), enable_sasl_external: true,
    });
  }
  return options;
}

// An amqps connection to the broker's TLS port.
function connectTls(broker, options = {}) {
  return connect(broker, { host: broker.tlsHost, port: broker.tlsPort, ...tlsOptions(options) });
}

// Sends `body` to `q` and receives it back on `conn`.
async function roundTrip(conn, q, body) {
  const { sender, outcomes } = await sendAll(conn, q, [{ body }]);
  assert.deepEqual(outcomes, ['accepted']);
  sender.close();
  const { receiver, got } = await receiveN(conn, q, 1);
  assert.equal(got[0].message.body, body);
  receiver.close();
}

// Resolves once `socket` has `n` bytes to read, with them (bytes past them
// are left in the socket).
function readExactly(socket, n) {
  return withTimeout(new Promise((resolve, reject) => {
    const onReadable = () => {
      const chunk = socket.read(n);
      if (chunk === null) return;
      done();
      resolve(chunk);
    };
    const onEnd = () => {
      done();
      reject(new Error(`socket ended before ${n} bytes`));
    };
    const done = () => {
      socket.removeListener('readable', onReadable);
      socket.removeListener('end', onEnd);
      socket.removeListener('error', reject);
    };
    socket.on('readable', onReadable);
    socket.once('end', onEnd);
    socket.once('error', reject);
    onReadable();
  }), `reading ${n} bytes`);
}

// A TLS socket on the plain port after the AMQP TLS upgrade: the TLS header
// sent, the broker's echo checked, then the handshake.
async function upgraded(broker, options = {}) {
  const raw = net.connect(broker.port, broker.host);
  await withTimeout(new Promise((resolve, reject) => {
    raw.once('connect', resolve);
    raw.once('error', reject);
  }), 'plain connect');
  raw.write(TLS_HEADER);
  const echo = await readExactly(raw, 8);
  assert.deepEqual(echo, TLS_HEADER, `the broker answered the TLS header with ${JSON.stringify(echo.toString('latin1'))}`);
  const { transport, enable_sasl_external: _, ...tlsOpts } = tlsOptions(options);
  const secure = tls.connect({ socket: raw, ...tlsOpts });
  await withTimeout(new Promise((resolve, reject) => {
    secure.once('secureConnect', resolve);
    secure.once('error', (e) => {
      raw.destroy();
      reject(e);
    });
  }), 'TLS handshake after the upgrade');
  return secure;
}

// rhea over an upgraded socket (its `connect` option hands it the socket).
async function connectUpgraded(broker, options = {}) {
  const secure = await upgraded(broker, options);
  return connect(broker, {
    ...tlsOptions(options),
    connect: (port, host, opts, callback) => {
      setImmediate(callback);
      return secure;
    },
  });
}

test('port file: the amqps address is on the second line', () => withTlsBroker(async (broker) => {
  const lines = fs.readFileSync(broker.portFile, 'utf8').trim().split('\n');
  assert.deepEqual(lines, [broker.address, broker.tlsAddress]);
  assert.equal(broker.tlsHost, '127.0.0.1');
  assert.ok(broker.tlsPort > 0 && broker.tlsPort !== broker.port, broker.tlsAddress);
}));

test('amqps trusting the right CA: send and receive', () => withTlsBroker(async (broker) => {
  const q = queueName('tls-ok');
  const conn = await connectTls(broker);
  try {
    assert.ok(conn.get_tls_socket().authorized, 'server certificate not verified');
    await roundTrip(conn, q, 'over TLS');
  } finally {
    await close(conn);
  }
}));

test('amqps trusting another CA is refused, nothing delivered', () => withTlsBroker(async (broker) => {
  const q = queueName('tls-wrong-ca');
  await assert.rejects(connectTls(broker, { ca: 'other-ca.pem' }), (e) => {
    assert.match(e.message, /unable to verify|self[- ]signed|certificate/i, e.message);
    return true;
  });
  assert.deepEqual(await fetchAll(broker, q), []);
  // The broker is fine for a client that trusts its CA.
  const conn = await connectTls(broker);
  await close(conn);
}));

test('TLS upgrade on the plain port: send and receive', () => withTlsBroker(async (broker) => {
  const q = queueName('tls-upgrade');
  const conn = await connectUpgraded(broker);
  try {
    assert.ok(conn.socket.encrypted && conn.socket.authorized);
    await roundTrip(conn, q, 'upgraded');
  } finally {
    await close(conn);
  }
  await assert.rejects(upgraded(broker, { ca: 'other-ca.pem' }), /unable to verify|certificate/i);
}));

const REQUIRED = { 'client-ca': 'ca.pem', 'client-auth': 'required' };
// No [[users]]: EXTERNAL needs none. Only alice may use any address.
const requiredConfig = () => tlsConfig(REQUIRED, { extra: accessFor('alice') });

test('client-auth required: alice by certificate (SASL EXTERNAL)', () => withTlsBroker(async (broker) => {
  const q = queueName('tls-alice');
  const conn = await connectTls(broker, { cert: 'alice' });
  try {
    // Only alice may send and receive: the broker took her name from the certificate.
    await roundTrip(conn, q, 'from alice');
  } finally {
    await close(conn);
  }
  // Through the upgrade too.
  const up = await connectUpgraded(broker, { cert: 'alice' });
  try {
    await roundTrip(up, q, 'from alice, upgraded');
  } finally {
    await close(up);
  }
  // bob's certificate is valid too: he gets in as bob, and the rule denies him.
  const bob = await connectTls(broker, { cert: 'bob' });
  try {
    await assert.rejects(openLink(bob, 'sender', { target: { address: q } }), (e) => {
      assert.equal(e.condition && e.condition.condition, 'amqp:unauthorized-access', JSON.stringify(e.condition));
      return true;
    });
  } finally {
    await close(bob);
  }
  // Anonymous clients (the plain port) are denied by that rule.
  const anon = await connect(broker);
  try {
    await assert.rejects(openLink(anon, 'sender', { target: { address: q } }), (e) => {
      assert.equal(e.condition && e.condition.condition, 'amqp:unauthorized-access', JSON.stringify(e.condition));
      return true;
    });
  } finally {
    await close(anon);
  }
}, requiredConfig()));

for (const [name, cert] of [['no certificate', undefined], ['a certificate of another CA', 'other-alice']]) {
  test(`client-auth required: ${name} fails the handshake`, () => withTlsBroker(async (broker) => {
    const q = queueName('tls-no-cert');
    // The broker's TLS alert: certificate required (TLS 1.3) / unknown CA.
    const alert = cert ? /alert unknown ca/ : /alert certificate required/;
    await assert.rejects(async () => {
      const conn = await connectTls(broker, { cert });
      try {
        await sendAll(conn, q, [{ body: 'must not arrive' }]);
      } finally {
        await close(conn);
      }
    }, alert);
    const alice = await connectTls(broker, { cert: 'alice' });
    try {
      const receiver = await openLink(alice, 'receiver', { source: { address: q }, credit_window: 0 });
      assert.deepEqual(await drain(receiver, 10), []);
    } finally {
      await close(alice);
    }
  }, requiredConfig()));
}

test('SIGHUP reloads the server certificate for new connections', () => withTlsBroker(async (broker) => {
  const q = queueName('tls-reload');
  const old = await connectTls(broker);
  try {
    const { outcomes } = await sendAll(old, q, [{ body: 'sent before the reload' }]);
    assert.deepEqual(outcomes, ['accepted']);
    fs.copyFileSync(pkiFile('other-server.pem'), path.join(broker.dir, 'server.pem'));
    fs.copyFileSync(pkiFile('other-server.key'), path.join(broker.dir, 'server.key'));
    assert.match(await broker.reload(), /configuration reloaded/);
    // New connections get the other CA's certificate, amqps and upgrade.
    const fresh = await connectTls(broker, { ca: 'other-ca.pem' });
    try {
      await roundTrip(fresh, `${q}-new`, 'after the reload');
    } finally {
      await close(fresh);
    }
    await assert.rejects(connectTls(broker), /unable to verify|certificate/i);
    const up = await connectUpgraded(broker, { ca: 'other-ca.pem' });
    await close(up);
    await assert.rejects(upgraded(broker), /unable to verify|certificate/i);
    // The connection made before stays, and works.
    const { outcomes: more } = await sendAll(old, q, [{ body: 'still here' }]);
    assert.deepEqual(more, ['accepted']);
    const { got } = await receiveN(old, q, 2);
    assert.deepEqual(got.map((g) => g.message.body), ['sent before the reload', 'still here']);
  } finally {
    await close(old);
  }
}));

test('SIGHUP reloads the client CA for new connections', () => withBroker(async (broker) => {
  const q = queueName('tls-reload-ca');
  const old = await connectTls(broker, { cert: 'alice' });
  try {
    await roundTrip(old, q, 'before');
    fs.copyFileSync(pkiFile('other-ca.pem'), path.join(broker.dir, 'client-ca.pem'));
    await broker.reload();
    // The other CA's alice gets in now, ours no longer.
    const other = await connectTls(broker, { cert: 'other-alice' });
    try {
      await roundTrip(other, q, 'the other alice');
    } finally {
      await close(other);
    }
    await assert.rejects(async () => {
      const conn = await connectTls(broker, { cert: 'alice' });
      await close(conn);
    }, /alert unknown ca/);
    await roundTrip(old, q, 'still here');
  } finally {
    await close(old);
  }
}, tlsConfig({ 'client-ca': 'client-ca.pem', 'client-auth': 'required' }, { extra: accessFor('alice') }),
{ files: { ...pkiFiles(), 'client-ca.pem': pkiFile('ca.pem') } }));
