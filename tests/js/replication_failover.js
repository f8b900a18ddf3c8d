// Quorum replication under failover (issue 6), run by tests/test_replication.py:
//   node replication_failover.js HTTP_PORT1,HTTP_PORT2,HTTP_PORT3 LANES PER_LANE OUT_FILE
// Connects with the three gossip seeds (external HTTP ports), writes LANES
// streams of PER_LANE events each (one write in flight per lane, expected
// version Any), retrying a failed write with the same event id, and writes
// the acknowledged event ids per lane to OUT_FILE as JSON.  Half-way it
// creates OUT_FILE.half: the test then kills the leader.
'use strict';

const fs = require('fs');
const { client, uuid, check, finish, fail, deadline } = require('./common');

deadline(150000);
const ports = process.argv[2].split(',').map((p) => parseInt(p, 10));
const lanes = parseInt(process.argv[3], 10);
const perLane = parseInt(process.argv[4], 10);
const out = process.argv[5];

const seeds = ports.map((port) => new client.GossipSeed({ host: '127.0.0.1', port }));
const conn = client.createConnection(
  {
    log: { debug() {}, info() {}, error() {} },
    maxReconnections: -1,
    reconnectionDelay: 100,
    operationTimeout: 3000,
    maxRetries: 10,
    maxDiscoverAttempts: 50,
    discoverDelay: 200,
    gossipTimeout: 500,
    defaultUserCredentials: new client.UserCredentials('admin', 'changeit'),
  },
  seeds,
  'replication-failover',
);
conn.on('error', () => {});

const acked = [];
for (let i = 0; i < lanes; i++) acked.push([]);
let retries = 0;
let total = 0;

async function lane(i) {
  const stream = 'lane-' + i;
  for (let n = 0; n < perLane; n++) {
    const id = uuid.v4();
    for (let attempt = 0; ; attempt++) {
      if (attempt > 200) throw new Error('write ' + n + ' of ' + stream + ' never acknowledged');
      try {
        const event = client.createJsonEventData(id, { n }, null, 'lane-event');
        await conn.appendToStream(stream, client.expectedVersion.any, [event]);
        acked[i].push(id);
        total++;
        if (total === Math.floor((lanes * perLane) / 2)) fs.writeFileSync(out + '.half', '');
        break;
      } catch (e) {
        retries++;
        await new Promise((r) => setTimeout(r, 50));
      }
    }
  }
}

(async () => {
  await conn.connect();
  const started = Date.now();
  const all = [];
  for (let i = 0; i < lanes; i++) all.push(lane(i));
  await Promise.all(all);
  check('every write acknowledged', total === lanes * perLane, total);
  fs.writeFileSync(out, JSON.stringify(acked));
  conn.close();
  finish({ total, retries, seconds: (Date.now() - started) / 1000 });
})().catch(fail);
