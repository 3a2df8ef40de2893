// The Node.js reference tus server for the benchmarks: @tus/server mounted at /files/ on a
// plain node:http server, storing with @tus/file-store or @tus/s3-store. Configured only by
// the environment (bench/run.py sets it):
//   REF_PORT          port on 127.0.0.1 (required)
//   REF_STORE         "file" (default) or "s3"
//   REF_DIR           file store: the directory for bytes and .json info files
//   REF_S3_ENDPOINT   s3 store: endpoint URL (path-style addressing), REF_S3_BUCKET, REF_S3_REGION,
//                     credentials from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY
//   REF_PART_SIZE     s3 store: preferred part size in bytes (the bench passes ours)
//   REF_S3_CHECKSUMS  s3 store: the SDK's request/response checksum mode, default WHEN_REQUIRED
//   REF_REDIS_URL     s3 store: keep upload info in Redis (RedisKvStore), the reference's
//                     multi-instance setup; without it an in-memory cache
// Prints one line, "ready <port>", once it listens; exits on SIGTERM/SIGINT.
import http from "node:http";
import process from "node:process";

import { FileStore } from "@tus/file-store";
import { S3Store } from "@tus/s3-store";
import { RedisKvStore, Server } from "@tus/server";

const env = process.env;
const port = Number(env.REF_PORT);
if (!port) {
  console.error("REF_PORT is required");
  process.exit(2);
}

async function datastore() {
  if ((env.REF_STORE ?? "file") === "file") {
    return new FileStore({ directory: env.REF_DIR ?? "./files" });
  }
  let cache;
  if (env.REF_REDIS_URL) {
    const { createClient } = await import("@redis/client");
    const client = createClient({ url: env.REF_REDIS_URL });
    client.on("error", (err) => console.error("redis:", err.message));
    await client.connect();
    cache = new RedisKvStore(client, "tusref:");
  }
  return new S3Store({
    partSize: Number(env.REF_PART_SIZE ?? 8 * 1024 * 1024),
    cache,
    s3ClientConfig: {
      bucket: env.REF_S3_BUCKET,
      region: env.REF_S3_REGION ?? "us-east-1",
      endpoint: env.REF_S3_ENDPOINT,
      forcePathStyle: true,
      // As ours (tusserver/compose/backends.py): no extra CRC32 of every part unless S3 requires one.
      // The SDK's default, WHEN_SUPPORTED, streams parts aws-chunked with a checksum trailer,
      // which moto decodes in Python: it would bill the store's checksums to the server.
      requestChecksumCalculation: env.REF_S3_CHECKSUMS ?? "WHEN_REQUIRED",
      responseChecksumValidation: env.REF_S3_CHECKSUMS ?? "WHEN_REQUIRED",
      credentials: {
        accessKeyId: env.AWS_ACCESS_KEY_ID,
        secretAccessKey: env.AWS_SECRET_ACCESS_KEY,
      },
    },
  });
}

const tus = new Server({ path: "/files", datastore: await datastore() });
const server = http.createServer((req, res) => {
  tus.handle(req, res).catch((err) => {
    console.error("handler:", err);
    if (!res.headersSent) {
      res.statusCode = 500;
    }
    res.end();
  });
});
server.keepAliveTimeout = 60_000;
server.listen(port, "127.0.0.1", () => console.log(`ready ${port}`));

for (const signal of ["SIGTERM", "SIGINT"]) {
  process.on(signal, () => {
    server.close(() => process.exit(0));
    server.closeAllConnections();
    setTimeout(() => process.exit(0), 2000).unref();
  });
}
