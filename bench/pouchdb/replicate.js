// CouchDB-style replication of the bench's records, for
// `chartsync bench --pouchdb`: an express-pouchdb server (in-memory) on
// 127.0.0.1, one PouchDB pushing the records to it (batch 100) and another
// fetching them all (batch 100), each through a URL the bench gives (its
// pacing proxy). Prints one JSON line with the seconds of each.
//
// node replicate.js --listen PORT --push-url URL --fetch-url URL --records FILE.jsonl
'use strict';

const fs = require('fs');
const express = require('express');
const PouchDB = require('pouchdb-core')
  .plugin(require('pouchdb-adapter-memory'))
  .plugin(require('pouchdb-adapter-http'))
  .plugin(require('pouchdb-replication'))
  .plugin(require('pouchdb-mapreduce'));

function args() {
  const out = {};
  const argv = process.argv.slice(2);
  for (let i = 0; i < argv.length; i += 2) {
    if (!argv[i].startsWith('--') || argv[i + 1] === undefined) {
      throw new Error(`bad argument ${argv[i]}`);
    }
    out[argv[i].slice(2)] = argv[i + 1];
  }
  for (const k of ['listen', 'push-url', 'fetch-url', 'records']) {
    if (!out[k]) throw new Error(`--${k} is required`);
  }
  return out;
}

async function main() {
  const a = args();
  const batch = Number(a.batch || 100);
  const docs = fs
    .readFileSync(a.records, 'utf8')
    .split('\n')
    .filter((l) => l.trim() !== '')
    .map((l) => JSON.parse(l));
  const Memory = PouchDB.defaults({ adapter: 'memory' });
  const app = express();
  app.use('/', require('express-pouchdb')(Memory, { mode: 'minimumForPouchDB', inMemoryConfig: true }));
  const server = await new Promise((resolve, reject) => {
    const s = app.listen(Number(a.listen), '127.0.0.1', () => resolve(s));
    s.on('error', reject);
  });
  await new Memory('bench').info();

  const clinicA = new Memory('clinic-a');
  await clinicA.bulkDocs(docs);
  let t = process.hrtime.bigint();
  const remotePush = new PouchDB(`${a['push-url']}/bench`, { adapter: 'http' });
  const pushed = await clinicA.replicate.to(remotePush, { batch_size: batch });
  const pushSeconds = Number(process.hrtime.bigint() - t) / 1e9;

  const clinicB = new Memory('clinic-b');
  t = process.hrtime.bigint();
  const remoteFetch = new PouchDB(`${a['fetch-url']}/bench`, { adapter: 'http' });
  const fetched = await clinicB.replicate.from(remoteFetch, { batch_size: batch });
  const fetchSeconds = Number(process.hrtime.bigint() - t) / 1e9;
  const info = await clinicB.info();
  if (pushed.docs_written !== docs.length || info.doc_count !== docs.length) {
    throw new Error(`pushed ${pushed.docs_written} and fetched ${info.doc_count} of ${docs.length} records: ${JSON.stringify(fetched)}`);
  }
  console.log(JSON.stringify({
    records: docs.length,
    batch_size: batch,
    push_seconds: pushSeconds,
    fetch_seconds: fetchSeconds,
    fetched_docs: fetched.docs_written,
  }));
  server.close();
  process.exit(0);
}

main().catch((e) => {
  console.error(`pouchdb bench: ${e && e.stack ? e.stack : e}`);
  process.exit(1);
});
