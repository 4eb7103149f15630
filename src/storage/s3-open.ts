/**
 * Opens the S3 blob store from config `storage.s3` and checks, before the
 * registry serves anything, that the bucket exists and the credentials may
 * list, write and delete in it. A failure stops start-up with a message that
 * names the config key to fix and what S3 answered.
 */
import { randomUUID } from "node:crypto";
import { DeleteObjectCommand, ListObjectsV2Command, PutObjectCommand } from "@aws-sdk/client-s3";
import type { Config } from "../config/schema.js";
import { S3BlobStore } from "./s3.js";
import { describeS3Error, s3ErrorName } from "./s3-client.js";

export class S3ConfigError extends Error {}

/** `check` false skips the access check (a serving thread whose main thread has just made it). */
export async function openS3BlobStore(storage: Config["storage"], check = true): Promise<S3BlobStore> {
  const s3 = storage.s3;
  if (!s3) {
    throw new S3ConfigError("config key storage.s3.bucket: required when storage.driver is s3 (env FERRY_STORAGE__S3__BUCKET)");
  }
  if ((s3.accessKeyId === undefined) !== (s3.secretAccessKey === undefined)) {
    throw new S3ConfigError(
      "config keys storage.s3.accessKeyId and storage.s3.secretAccessKey: set both or neither (neither uses the AWS credential chain)",
    );
  }
  const store = new S3BlobStore({
    endpoint: s3.endpoint,
    region: s3.region,
    bucket: s3.bucket,
    forcePathStyle: s3.forcePathStyle,
    accessKeyId: s3.accessKeyId,
    secretAccessKey: s3.secretAccessKey,
    prefix: s3.prefix,
    partSize: s3.partSize,
    redirectExpiresMs: s3.redirect.enabled ? s3.redirect.expires : undefined,
  });
  if (!check) return store;
  try {
    await checkAccess(store, { bucket: s3.bucket, endpoint: s3.endpoint ?? `AWS S3 (${s3.region})` });
  } catch (error) {
    await store.close();
    throw error;
  }
  return store;
}

/** Lists, writes and deletes one probe object: each S3 permission the registry needs at least once. */
async function checkAccess(store: S3BlobStore, where: { bucket: string; endpoint: string }): Promise<void> {
  const { client, layout } = store;
  const probe = layout.probe(`${randomUUID()}`);
  const steps: Array<[string, () => Promise<unknown>]> = [
    ["list", () => client.send(new ListObjectsV2Command({ Bucket: where.bucket, Prefix: layout.prefix, MaxKeys: 1 }))],
    ["write", () => client.send(new PutObjectCommand({ Bucket: where.bucket, Key: probe, Body: "ferry start-up check" }))],
    ["delete", () => client.send(new DeleteObjectCommand({ Bucket: where.bucket, Key: probe }))],
  ];
  for (const [what, step] of steps) {
    try {
      await step();
    } catch (error) {
      throw new S3ConfigError(explain(error, what, where));
    }
  }
}

function explain(error: unknown, what: string, where: { bucket: string; endpoint: string }): string {
  const answer = describeS3Error(error);
  const name = s3ErrorName(error);
  const bucket = `bucket "${where.bucket}" at ${where.endpoint}`;
  if (name === "NoSuchBucket") return `config key storage.s3.bucket: ${bucket} does not exist (S3 answered ${answer})`;
  if (["InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidToken", "ExpiredToken"].includes(name)) {
    return `config keys storage.s3.accessKeyId / storage.s3.secretAccessKey: S3 refused the credentials for ${bucket} (S3 answered ${answer})`;
  }
  if (name === "CredentialsProviderError") {
    return `config keys storage.s3.accessKeyId / storage.s3.secretAccessKey: no credentials found (set them, or AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, or a shared credentials profile): ${answer}`;
  }
  if (name === "AccessDenied" || name === "AllAccessDisabled") {
    return `config keys storage.s3.accessKeyId / storage.s3.bucket: the credentials may not ${what} objects in ${bucket} (S3 answered ${answer}); docs/storage.md lists the permissions needed`;
  }
  if (/^E[A-Z]+$/.test(name) || name === "TimeoutError" || name === "RequestTimeout") {
    return `config key storage.s3.endpoint: ${where.endpoint} is unreachable (${answer})`;
  }
  return `config key storage.s3: could not ${what} objects in ${bucket} (S3 answered ${answer})`;
}
