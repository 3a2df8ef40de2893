// Uploads every file of a directory with tus-js-client, a bounded number at a time, as Uppy
// does (its tus plugin's default `limit` is 20); driven by tests/e2e/test_bulk_uploads.py.
//
//   node bulk.mjs DIR '{"endpoint": "...", "limit": 20, "headers": {...}}'
//
// Options other than `limit` go to every tus.Upload as they are; tus-js-client's defaults
// apply otherwise (retryDelays [0, 1000, 3000, 5000], which retry neither 429 nor any 4xx but
// 409 and 423). Prints {"uploads": [{"file", "url"}], "failures": [...], "answers": {status:
// count}} on stdout and exits 0 when every upload succeeded, 1 otherwise.
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import * as tus from 'tus-js-client';

const Upload = tus.Upload ?? tus.default?.Upload;

function uploadOne(dir, file, options, answers) {
  return new Promise((resolve) => {
    const upload = new Upload(readFileSync(join(dir, file)), {
      ...options,
      metadata: { filename: file, filetype: 'application/octet-stream' },
      onAfterResponse(req, res) {
        const key = `${req.getMethod()} ${res.getStatus()}`;
        answers[key] = (answers[key] ?? 0) + 1;
      },
      onSuccess() {
        resolve({ file, url: upload.url });
      },
      onError(error) {
        resolve({ file, error: String(error) });
      },
    });
    upload.start();
  });
}

async function main(dir, { limit = 20, ...options }) {
  const files = readdirSync(dir).sort();
  const answers = {};
  const results = [];
  let next = 0;
  // `limit` workers, each taking the next file when its upload ends.
  async function worker() {
    while (next < files.length) {
      const file = files[next++];
      results.push(await uploadOne(dir, file, options, answers));
    }
  }
  const started = Date.now();
  await Promise.all(Array.from({ length: limit }, worker));
  const uploads = results.filter((r) => r.url);
  const failures = results.filter((r) => r.error);
  const summary = { uploads, failures, answers, seconds: (Date.now() - started) / 1000 };
  process.stdout.write(`${JSON.stringify(summary)}\n`, () => process.exit(failures.length ? 1 : 0));
}

const [, , dir, optionsJson] = process.argv;
main(dir, JSON.parse(optionsJson ?? '{}')).catch((error) => {
  process.stderr.write(`bulk.mjs: ${error?.stack ?? error}\n`, () => process.exit(2));
});
