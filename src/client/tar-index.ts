/**
 * Random access into an uncompressed tar file: one pass over the headers
 * records where each member's data starts, so members can then be streamed
 * with createReadStream({start, end}) in any order and in parallel.
 * Handles ustar prefixes, PAX `path` records, GNU long names, and symlinks
 * and hard links (docker save links identical layer.tar files).
 */
import { open } from "node:fs/promises";
import { posix } from "node:path";

export interface TarMember {
  name: string;
  offset: number;
  size: number;
}

function cString(buffer: Buffer, start: number, length: number): string {
  const slice = buffer.subarray(start, start + length);
  const nul = slice.indexOf(0);
  return slice.subarray(0, nul < 0 ? slice.length : nul).toString("utf8");
}

function octal(buffer: Buffer, start: number, length: number): number {
  // GNU base-256 for sizes of 8 GiB and more.
  if (buffer[start]! & 0x80) {
    let value = 0;
    for (let i = start + 1; i < start + length; i++) value = value * 256 + buffer[i]!;
    return value;
  }
  const text = cString(buffer, start, length).trim();
  return text === "" ? 0 : parseInt(text, 8);
}

function normalize(name: string): string {
  return posix.normalize(name.replace(/^\.?\/+/, "")).replace(/\/$/, "");
}

function paxPath(data: Buffer): string | undefined {
  let pos = 0;
  while (pos < data.length) {
    const space = data.indexOf(0x20, pos);
    if (space < 0) break;
    const length = parseInt(data.subarray(pos, space).toString("utf8"), 10);
    if (!Number.isFinite(length) || length <= 0) break;
    const record = data.subarray(space + 1, pos + length - 1).toString("utf8");
    const eq = record.indexOf("=");
    if (record.slice(0, eq) === "path") return record.slice(eq + 1);
    pos += length;
  }
  return undefined;
}

export async function indexTar(path: string): Promise<Map<string, TarMember>> {
  const members = new Map<string, TarMember>();
  const links: Array<[string, string, boolean]> = [];
  const handle = await open(path, "r");
  try {
    const { size: fileSize } = await handle.stat();
    const header = Buffer.alloc(512);
    let offset = 0;
    let longName: string | undefined;
    while (offset + 512 <= fileSize) {
      await handle.read(header, 0, 512, offset);
      if (header.every((b) => b === 0)) break;
      const size = octal(header, 124, 12);
      const type = String.fromCharCode(header[156]!);
      const dataOffset = offset + 512;
      let name = cString(header, 0, 100);
      const magic = cString(header, 257, 6);
      if (magic.startsWith("ustar")) {
        const prefix = cString(header, 345, 155);
        if (prefix) name = `${prefix}/${name}`;
      }
      if (longName !== undefined) {
        name = longName;
        longName = undefined;
      }
      if (type === "x" || type === "L") {
        const data = Buffer.alloc(size);
        await handle.read(data, 0, size, dataOffset);
        longName = type === "L" ? cString(data, 0, size) : paxPath(data);
      } else if (type === "0" || type === "\0" || type === "7") {
        members.set(normalize(name), { name: normalize(name), offset: dataOffset, size });
      } else if (type === "1" || type === "2") {
        links.push([normalize(name), cString(header, 157, 100), type === "2"]);
      }
      offset = dataOffset + Math.ceil(size / 512) * 512;
    }
  } finally {
    await handle.close();
  }
  for (const [name, target, symbolic] of links) {
    const resolved = symbolic ? normalize(posix.join(posix.dirname(name), target)) : normalize(target);
    const member = members.get(resolved);
    if (member) members.set(name, { ...member, name });
  }
  return members;
}
