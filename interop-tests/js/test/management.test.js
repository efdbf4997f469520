'use strict';
// The AMQP management node `$management` through rhea (docs/OPERATIONS.md):
// the pattern of Azure and Qpid management clients, a receiver attached to
// `$management` with its own reply address and a sender to it; READ and
// QUERY of queues with known traffic, and the status codes of mistakes.

const { test } = require('node:test');
const assert = require('node:assert/strict');

const { withBroker } = require('../lib/broker');
const { Inbox, close, connect, openLink, queueName, sendAll, sendOne } = require('../lib/amqp');

// A management client: requests on a sender, responses on a receiver whose
// target address is the reply-to of every request.
async function managementClient(conn) {
  const replyTo = queueName('mgmt-replies');
  const receiver = await openLink(conn, 'receiver', {
    source: { address: '$management' }, target: { address: replyTo }, credit_window: 0,
  });
  const sender = await openLink(conn, 'sender', { target: { address: '$management' } });
  const inbox = new Inbox(receiver);
  let next = 0;
  return {
    async request(properties, body) {
      next += 1;
      const id = `req-${next}`;
      const sent = await sendOne(sender, {
        message_id: id, reply_to: replyTo, application_properties: properties, body,
      });
      assert.equal(sent.outcome, 'accepted', JSON.stringify(sent.error));
      receiver.add_credit(1);
      const response = (await inbox.next()).message;
      assert.equal(response.correlation_id, id);
      return response;
    },
  };
}

test('READ and QUERY of queues with known traffic; mistakes get status codes', () => withBroker(async (broker) => {
  const queue = queueName('mgmt');
  const conn = await connect(broker);
  try {
    await sendAll(conn, queue, [{ body: 'one' }, { body: 'two' }]);
    const client = await managementClient(conn);

    const read = await client.request({ operation: 'READ', type: 'ordo:queue', name: queue });
    assert.equal(read.application_properties.statusCode, 200);
    assert.equal(read.body.name, queue);
    assert.equal(read.body.messages, 2);
    assert.equal(read.body.enqueued, 2);
    assert.equal(read.body.consumers, 0);
    assert.equal(read.body.type, 'ordo:queue');

    const query = await client.request(
      { operation: 'QUERY', entityType: 'ordo:queue' }, { attributeNames: ['name', 'messages'] });
    assert.equal(query.application_properties.statusCode, 200);
    assert.deepEqual(query.body.attributeNames, ['name', 'messages']);
    assert.ok(query.body.results.some((row) => row[0] === queue && row[1] === 2),
      JSON.stringify(query.body.results));

    const missing = await client.request({ operation: 'READ', type: 'ordo:queue', name: 'no-such-queue' });
    assert.equal(missing.application_properties.statusCode, 404);
    const unknown = await client.request({ operation: 'FROB', type: 'ordo:queue', name: queue });
    assert.ok([400, 501].includes(unknown.application_properties.statusCode),
      JSON.stringify(unknown.application_properties));
    assert.ok(unknown.application_properties.statusDescription);
  } finally {
    await close(conn);
  }
}));
