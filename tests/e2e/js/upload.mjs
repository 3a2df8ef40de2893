// Uploads one file with tus-js-client; driven by tests/e2e/test_tus_js_client.py.
//
//   node upload.mjs FILE '{"endpoint": "...", "chunkSize": 1048576, "source": "stream", ...}'
//
// Options are tus-js-client's own (endpoint, chunkSize, parallelUploads, uploadLengthDeferred,
// metadata, retryDelays, ...) plus `source`: "path" (default; an fs.ReadStream, which the
// client slices by path), "buffer", or "stream" (a plain Readable of unknown size, as a pipe).
// On success prints {"url": ..., "exchanges": [{"method", "url", "status", ...}, ...]} on
// stdout and exits 0; on failure prints the error on stderr and exits 1.
import { createReadStream, readFileSync } from 'node:fs';
import { Readable } from 'node:stream';
import * as tus from 'tus-js-client';

// The package's "main" is CommonJS; depending on how Node maps it, Upload is a named export
// or hangs off the default export.
const Upload = tus.Upload ?? tus.default?.Upload;

// Exit only once the text is flushed: a pipe may otherwise lose the line at process.exit.
function finish(stream, text, code) {
  stream.write(text, () => process.exit(code));
}

function fail(message) {
  finish(process.stderr, `upload.mjs: ${message}\n`, 1);
}

function openSource(kind, file) {
  switch (kind) {
    case 'path':
      return createReadStream(file);
    case 'buffer':
      return readFileSync(file);
    case 'stream':
      return byteStream(readFileSync(file));
    default:
      throw new Error(`unknown source ${kind}`);
  }
}

// A plain byte stream with no path, so the client must treat it as a stream of unknown size
// (its StreamSource), not as a file it can slice and measure.
// - Not Readable.from: that makes an object-mode stream, whose read(n) ignores n, so every
//   piece would become its own small PATCH whatever chunkSize says.
// - Not a pipe from fs.createReadStream: that signals EOF separately from the last bytes,
//   and tus-js-client 4.3.1's StreamSource then waits forever for data that never comes when
//   the size is an exact multiple of chunkSize (a client bug, not the server's). Ending the
//   stream right behind the last piece lets the client see the end and send its final PATCH
//   with an empty body and Upload-Length, which is the server case worth testing.
function byteStream(buf, piece = 256 * 1024) {
  let pos = 0;
  return new Readable({
    read() {
      while (pos < buf.length) {
        const more = this.push(buf.subarray(pos, pos + piece));
        pos += piece;
        if (!more) return;
      }
      this.push(null);
    },
  });
}

function main(file, { source = 'path', ...options }) {
  // Every HTTP exchange, so the test can tell a clean run from one that only passed thanks
  // to the client's silent retries.
  const exchanges = [];
  const upload = new Upload(openSource(source, file), {
    ...options,
    onAfterResponse(req, res) {
      exchanges.push({
        method: req.getMethod(),
        url: req.getURL(),
        status: res.getStatus(),
        // Request headers the tests check (deferred length, concatenation).
        uploadLength: req.getHeader('Upload-Length') ?? null,
        deferLength: req.getHeader('Upload-Defer-Length') ?? null,
        concat: req.getHeader('Upload-Concat') ?? null,
        offset: res.getHeader('Upload-Offset') ?? null,
        // When the answer arrived (ms since the epoch): the takeover test times a resume.
        at: Date.now(),
      });
    },
    onError(error) {
      fail(`${error}\nexchanges: ${JSON.stringify(exchanges)}`);
    },
    onSuccess() {
      succeeded = true;
      finish(process.stdout, `${JSON.stringify({ url: upload.url, exchanges })}\n`, 0);
    },
  });
  // If the client stalls with nothing left to wait on, Node would exit 0 with no output.
  let succeeded = false;
  process.on('beforeExit', () => {
    if (!succeeded) fail(`the client stalled\nexchanges: ${JSON.stringify(exchanges)}`);
  });
  upload.start();
}

const [, , file, optionsJson] = process.argv;
if (!file || !optionsJson) {
  fail('usage: node upload.mjs FILE OPTIONS_JSON');
} else {
  try {
    main(file, JSON.parse(optionsJson));
  } catch (error) {
    fail(String(error?.stack ?? error));
  }
}
