/**
 * Wires notifications into a running registry: the queue file beside the
 * metadata database, the notifier and its pumps, the admin endpoint, the
 * metrics, and the two sources of Ferry events that no request causes
 * (garbage collection, foreign source health). With no endpoint configured
 * nothing is opened and every hook is a no-op.
 */
import type { Logger } from "pino";
import type { Registry } from "prom-client";
import type { Extension } from "../http/app.js";
import { FederationService } from "../federation/service.js";
import type { SourceStateChange } from "../federation/health.js";
import type { GcReport } from "../registry/gc.js";
import type { NotificationsConfig } from "./config.js";
import { NO_EVENTS, type EventSink } from "./events.js";
import { NotificationQueue } from "./queue.js";
import { Notifier, type NotifierOptions } from "./notifier.js";
import { notificationExtensions } from "./admin.js";
import { registerNotificationMetrics } from "./metrics.js";

export interface Notifications {
  sink: EventSink;
  extensions: Extension[];
  /** The registry's address for events' `source.addr`, once it listens. */
  listening(addr: string): void;
  gcFinished(report: GcReport): void;
  close(): Promise<void>;
}

export interface NotificationDeps {
  /** The metadata database file; the queue lives in `<path>.notifications`. */
  metadataPath: string;
  logger: Logger;
  metrics: Registry;
  federation: unknown;
  /** Tests: replace how endpoints are contacted. */
  client?: NotifierOptions["client"];
}

export function startNotifications(config: NotificationsConfig, deps: NotificationDeps): Notifications {
  if (config.endpoints.length === 0) {
    return { sink: NO_EVENTS, extensions: notificationExtensions(null), listening: () => undefined, gcFinished: () => undefined, close: async () => undefined };
  }
  const logger = deps.logger.child({ component: "notifications" });
  const queue = new NotificationQueue(deps.metadataPath === ":memory:" ? ":memory:" : `${deps.metadataPath}.notifications`);
  const notifier = new Notifier({ config, queue, logger, client: deps.client });
  try {
    notifier.checkEndpoints();
  } catch (error) {
    queue.close();
    throw error;
  }
  registerNotificationMetrics(deps.metrics, notifier);
  const health = deps.federation instanceof FederationService ? deps.federation.health : null;
  if (health) health.onStateChange = (change) => notifier.emit(sourceEvent(change));
  notifier.start();
  return {
    sink: notifier,
    extensions: notificationExtensions(notifier),
    listening(addr) {
      notifier.source.addr = addr;
    },
    gcFinished(report) {
      if (report.skipped) return;
      const { skipped: _skipped, ...counts } = report;
      notifier.emit({ action: "gc", target: {}, ferry: { ...counts } });
    },
    async close() {
      if (health) health.onStateChange = null;
      await notifier.close();
      queue.close();
    },
  };
}

function sourceEvent(change: SourceStateChange) {
  const failed = change.to === "failing";
  return {
    action: failed ? ("foreign-source-failed" as const) : ("foreign-source-recovered" as const),
    target: { url: change.url },
    ferry: { host: change.host, state: change.to, previousState: change.from, ...(failed ? { error: change.error, consecutiveFailures: change.consecutiveFailures } : {}) },
  };
}
