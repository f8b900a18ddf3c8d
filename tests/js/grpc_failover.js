// @eventstore/db-client through gossip discovery on a three-node cluster
// (Insecure): node grpc_failover.js HOST:PORT,HOST:PORT,HOST:PORT STREAM
// Appends one event, prints {"ready": true}, waits for a line on stdin (the
// test kills the leader meanwhile), appends again (retrying while the
// cluster elects, at most 40 s), reads the stream and prints the result.
'use strict';

const { EventStoreDBClient, jsonEvent, NO_STREAM, ANY } = require('@eventstore/db-client');
const readline = require('readline');

setTimeout(() => {
  process.stdout.write(JSON.stringify({ ok: false, error: 'script deadline exceeded' }) + '\n');
  process.exit(1);
}, 120000).unref();

async function main() {
  const [hosts, stream] = process.argv.slice(2);
  const client = EventStoreDBClient.connectionString(
    `esdb://${hosts}?tls=false&nodePreference=leader&maxDiscoverAttempts=50&discoveryInterval=200`);
  await client.appendToStream(stream, jsonEvent({ type: 'Before', data: {} }),
    { expectedRevision: NO_STREAM });
  process.stdout.write(JSON.stringify({ ready: true }) + '\n');
  await new Promise((resolve) => readline.createInterface({ input: process.stdin }).once('line', resolve));
  const errors = [];
  const until = Date.now() + 40000;
  let appended = false;
  while (!appended && Date.now() < until) {
    try {
      await client.appendToStream(stream, jsonEvent({ type: 'After', data: {} }),
        { expectedRevision: ANY });
      appended = true;
    } catch (e) {
      errors.push((e.type || '') + ': ' + (e.message || '').slice(0, 200));
      await new Promise((r) => setTimeout(r, 250));
    }
  }
  const types = [];
  if (appended) {
    for await (const e of client.readStream(stream)) types.push(e.event.type);
  }
  await client.dispose();
  process.stdout.write(JSON.stringify({ ok: appended, types, errors: errors.slice(0, 5) }) + '\n');
  process.exit(0);
}

main().catch((e) => {
  process.stdout.write(JSON.stringify({ ok: false, error: String(e && e.stack || e) }) + '\n');
  process.exit(1);
});
