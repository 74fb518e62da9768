/**
 * The treevu WebSocket protocol (`/ws`) as the bell speaks it: message shapes, close codes,
 * and the reconnect timing rules. Framework-free and DOM-free, so it can be unit-checked in Node.
 */

/** A notification exactly as the server sends it (`notification.notification`, HTTP `items[]`). */
export interface BellNotification {
  id: number;
  type: string;
  title: string;
  message: string;
  data: Record<string, unknown>;
  /** ISO 8601 creation time, as the server sends it. */
  timestamp: string;
  read: boolean;
}

/** What the host element's `data-state` says. */
export type BellState = "connected" | "reconnecting" | "offline";

/** Bad or missing token, unknown or inactive user, no auth message in time: do not retry. */
export const CLOSE_UNAUTHENTICATED = 4401;
/** The token expired (at auth or at a heartbeat re-check): get a fresh one and reconnect. */
export const CLOSE_EXPIRED = 4403;
/** Too many messages from this user: back off, and keep doubling. */
export const CLOSE_RATE_LIMITED = 4429;
/** Server busy or client fell behind; the reason may say "retry after 2s". */
export const CLOSE_TRY_AGAIN_LATER = 1013;

/** Backoff base and cap, in milliseconds (1 s doubling to 30 s). */
export const BACKOFF_BASE_MS = 1000;
export const BACKOFF_CAP_MS = 30_000;

/**
 * The largest delay of reconnect attempt `attempt` (0 = the first retry after a drop):
 * `min(cap, base × 2^attempt)`. The exponent is clamped so it never overflows.
 */
export function backoffCeiling(
  attempt: number,
  baseMs: number = BACKOFF_BASE_MS,
  capMs: number = BACKOFF_CAP_MS,
): number {
  const a = Number.isFinite(attempt) && attempt > 0 ? Math.floor(attempt) : 0;
  return Math.min(capMs, baseMs * 2 ** Math.min(a, 52));
}

/**
 * Exponential backoff with full jitter: a uniform delay in `[0, min(30 s, 1 s × 2^attempt))`.
 * `random` returns a number in [0, 1) (defaults to `Math.random`).
 */
export function backoffDelay(
  attempt: number,
  random: () => number = Math.random,
  baseMs: number = BACKOFF_BASE_MS,
  capMs: number = BACKOFF_CAP_MS,
): number {
  return random() * backoffCeiling(attempt, baseMs, capMs);
}

/**
 * Seconds to wait from a close reason such as `server busy; retry after 2s` (or a bare
 * `Retry-After` value such as `2`); `null` when it names none. Hints over an hour are ignored.
 */
export function retryHintSeconds(reason: string | null | undefined): number | null {
  if (!reason) return null;
  const match = /(?:retry after\s*)?(\d+(?:\.\d+)?)\s*s?\s*$/i.exec(reason.trim());
  if (match === null || match[1] === undefined) return null;
  const seconds = Number(match[1]);
  return seconds > 0 && seconds <= 3600 ? seconds : null;
}

/**
 * The delay before the next connection attempt, in milliseconds: full-jitter backoff and, when
 * the server named a time (1013 `retry after Ns`), at least that long, spread over
 * `[hint, 2 × hint]` so that a crowd of refused clients does not come back together.
 */
export function reconnectDelay(
  attempt: number,
  hintSeconds: number | null,
  random: () => number = Math.random,
): number {
  const delay = backoffDelay(attempt, random);
  if (hintSeconds === null) return delay;
  return Math.max(delay, hintSeconds * 1000 * (1 + random()));
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

/** A positive safe integer id, or null. */
export function notificationId(value: unknown): number | null {
  return typeof value === "number" && Number.isSafeInteger(value) && value > 0 ? value : null;
}

/** Validates a notification from the wire or the HTTP API; null when it is malformed. */
export function parseNotification(value: unknown): BellNotification | null {
  if (!isRecord(value)) return null;
  const id = notificationId(value["id"]);
  if (id === null) return null;
  const str = (key: string): string => {
    const v = value[key];
    return typeof v === "string" ? v : "";
  };
  const data = value["data"];
  return {
    id,
    type: str("type"),
    title: str("title"),
    message: str("message"),
    data: isRecord(data) ? data : {},
    timestamp: str("timestamp"),
    read: value["read"] === true,
  };
}

/** A server → client message, loosely typed (unknown fields are kept). */
export type ServerMessage = Record<string, unknown> & { type: string };

/** Parses a text frame into a message object; null for anything that is not `{type: string}`. */
export function parseServerMessage(raw: unknown): ServerMessage | null {
  if (typeof raw !== "string") return null;
  let msg: unknown;
  try {
    msg = JSON.parse(raw);
  } catch {
    return null;
  }
  if (!isRecord(msg) || typeof msg["type"] !== "string") return null;
  return msg as ServerMessage;
}

/** A non-negative integer count, or null. */
export function countOf(value: unknown): number | null {
  return typeof value === "number" && Number.isSafeInteger(value) && value >= 0 ? value : null;
}

/** `ws://…` / `wss://…` for a WebSocket URL given as ws(s), http(s) or relative to the page. */
export function toWebSocketUrl(url: string, base?: string): string {
  const resolved = new URL(url, base);
  if (resolved.protocol === "http:") resolved.protocol = "ws:";
  else if (resolved.protocol === "https:") resolved.protocol = "wss:";
  return resolved.toString();
}

/** The HTTP origin of a WebSocket URL (`ws://h:3000/ws` → `http://h:3000`): the default API base. */
export function httpBaseOf(wsUrl: string): string {
  const u = new URL(wsUrl);
  const protocol = u.protocol === "wss:" || u.protocol === "https:" ? "https:" : "http:";
  return `${protocol}//${u.host}`;
}
