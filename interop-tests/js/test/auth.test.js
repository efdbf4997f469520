'use strict';
// SASL with anonymous access off and one user.

const { test, before } = require('node:test');
const assert = require('node:assert/strict');

const { withBroker, hashPassword } = require('../lib/broker');
const {
  close, connect, queueName, receiveN, sendAll,
} = require('../lib/amqp');

const USER = 'alice';
const PASSWORD = 's3cret pass';
let config;

before(() => {
  config = `[listener]
address = "127.0.0.1"
port = 0

[sasl]
allow-anonymous = false

[[users]]
name = "${USER}"
password = "${hashPassword(PASSWORD)}"

[logging]
level = "info"
`;
});

const withAuthBroker = (fn) => withBroker(fn, config);

test('SASL PLAIN with the right password', () => withAuthBroker(async (broker) => {
  const q = queueName('auth-ok');
  const conn = await connect(broker, { username: USER, password: PASSWORD });
  try {
    const { outcomes } = await sendAll(conn, q, [{ body: 'authenticated' }]);
    assert.deepEqual(outcomes, ['accepted']);
    const { got } = await receiveN(conn, q, 1);
    assert.equal(got[0].message.body, 'authenticated');
  } finally {
    await close(conn);
  }
}));

const refused = {
  'wrong password': { username: USER, password: 'wrong' },
  'unknown user': { username: 'mallory', password: PASSWORD },
  // rhea with a user name and no password offers SASL ANONYMOUS.
  'SASL ANONYMOUS': { username: 'guest' },
  // With no user name at all, rhea skips SASL: the broker answers with the
  // SASL protocol header, which rhea reports as a protocol error.
  'no credentials, no SASL': {},
};

for (const [name, options] of Object.entries(refused)) {
  test(`refused: ${name}`, () => withAuthBroker(async (broker) => {
    await assert.rejects(connect(broker, options), (e) => {
      if (Object.keys(options).length) assert.equal(e.condition, 'amqp:unauthorized-access', e.message);
      else assert.match(e.message, /SASL/, e.message);
      return true;
    });
    // The right user still gets in afterwards.
    const conn = await connect(broker, { username: USER, password: PASSWORD });
    await close(conn);
  }));
}
