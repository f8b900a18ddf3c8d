// Shared helpers of the node-eventstore-client scripts run by
// tests/test_tcp_clients.py.  Every script prints one JSON line
// {"ok": bool, "checks": [...], "failures": [...]} and exits 0 only when ok.
'use strict';

// ES_CLIENT picks the client generation: node-eventstore-client (0.2.19, proto2,
// the default) or node-eventstore-client-21 (21.10.1, proto3 schema).
const client = require(process.env.ES_CLIENT || 'node-eventstore-client');
const uuid = require('uuid');

const checks = [];
const failures = [];

function check(name, condition, detail) {
  checks.push(name);
  if (!condition) failures.push({ name, detail: detail === undefined ? null : String(detail) });
}

function port() {
  const p = parseInt(process.argv[2], 10);
  if (!p) throw new Error('usage: node script.js PORT');
  return p;
}

function connect(extra, name) {
  const settings = Object.assign(
    {
      log: { debug() {}, info() {}, error() {} },
      maxReconnections: 5,
      reconnectionDelay: 100,
      operationTimeout: 5000,
    },
    extra || {},
  );
  const conn = client.createConnection(settings, 'tcp://127.0.0.1:' + port(), name || 'system-test');
  conn.on('error', () => {});
  return conn;
}

const admin = new client.UserCredentials('admin', 'changeit');

function jsonEvent(body, type) {
  return client.createJsonEventData(uuid.v4(), body, null, type || 'test-event');
}

function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

function waitFor(predicate, timeoutMs, what) {
  const deadline = Date.now() + timeoutMs;
  return new Promise((resolve, reject) => {
    (function poll() {
      if (predicate()) return resolve();
      if (Date.now() > deadline) return reject(new Error('timed out waiting for ' + what));
      setTimeout(poll, 10);
    })();
  });
}

function finish(extra) {
  const result = Object.assign({ ok: failures.length === 0, checks, failures }, extra || {});
  process.stdout.write(JSON.stringify(result) + '\n');
  process.exit(result.ok ? 0 : 1);
}

function fail(error) {
  failures.push({ name: 'exception', detail: String(error && error.stack ? error.stack : error) });
  finish();
}

// Never hang: every script ends within this bound.
function deadline(ms) {
  setTimeout(() => fail(new Error('script deadline of ' + ms + ' ms exceeded')), ms).unref();
}

module.exports = { client, uuid, check, connect, admin, jsonEvent, sleep, waitFor, finish, fail, deadline, port };
