/**
 * Events in the CNCF distribution notification format
 * (`application/vnd.docker.distribution.events.v1+json`), so consumers
 * written for distribution's notifications read Ferry's unchanged:
 *
 *   { "events": [ { id, timestamp, action, target: { mediaType, size, digest,
 *     length, repository, url, tag }, request: { id, addr, host, method,
 *     useragent }, actor: { name }, source: { addr, instanceID } } ] }
 *
 * Ferry's own events (gc, foreign-source-failed, foreign-source-recovered)
 * use the same envelope and fields, plus a `ferry` object with their details;
 * distribution consumers that switch on `action` ignore them.
 */
import { randomUUID } from "node:crypto";
import type { EventAction } from "./config.js";

export const ENVELOPE_MEDIA_TYPE = "application/vnd.docker.distribution.events.v1+json";
/** distribution's media type for blob targets (it has no better one). */
export const BLOB_MEDIA_TYPE = "application/octet-stream";

export interface EventTarget {
  mediaType?: string;
  size?: number;
  digest?: string;
  /** Same as size (distribution keeps both for old consumers). */
  length?: number;
  repository?: string;
  /** Where the content can be fetched. */
  url?: string;
  tag?: string;
  /** Mount events: the repository the blob was mounted from. */
  fromRepository?: string;
}

export interface EventRequest {
  id: string;
  addr: string;
  host: string;
  method: string;
  useragent: string;
}

export interface RegistryEvent {
  id: string;
  /** RFC 3339 with milliseconds. */
  timestamp: string;
  action: EventAction;
  target: EventTarget;
  /** Absent for events no request caused (gc on schedule, foreign source health). */
  request?: EventRequest;
  /** Empty for anonymous callers and background work. */
  actor: { name?: string };
  source: { addr: string; instanceID: string };
  /** Ferry events only. */
  ferry?: Record<string, unknown>;
}

export interface Envelope {
  events: RegistryEvent[];
}

/** What an emitter supplies; id, timestamp and source are filled in. */
export interface EventInput {
  action: EventAction;
  target: EventTarget;
  request?: EventRequest;
  actor?: string | null;
  ferry?: Record<string, unknown>;
}

/** Where events go. Emitting never throws and never waits for delivery. */
export interface EventSink {
  /** False when no endpoint wants this action: callers may skip building the event. */
  wants(action: EventAction): boolean;
  emit(event: EventInput): void;
}

/** The key that orders an event: events with one key are delivered one at a time, in order. */
export function orderingKey(event: Pick<RegistryEvent, "action" | "target">): string {
  if (event.target.repository) return `repository:${event.target.repository}`;
  if (event.action === "foreign-source-failed" || event.action === "foreign-source-recovered") return `source:${event.target.url ?? ""}`;
  return event.action;
}

export function completeEvent(input: EventInput, source: { addr: string; instanceID: string }, now = new Date()): RegistryEvent {
  return {
    id: randomUUID(),
    timestamp: now.toISOString(),
    action: input.action,
    target: input.target,
    ...(input.request ? { request: input.request } : {}),
    actor: input.actor ? { name: input.actor } : {},
    source,
    ...(input.ferry ? { ferry: input.ferry } : {}),
  };
}

/** A sink that drops everything: the registry without notifications configured. */
export const NO_EVENTS: EventSink = {
  wants: () => false,
  emit: () => undefined,
};
