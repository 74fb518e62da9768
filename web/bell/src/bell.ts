/**
 * `<treevu-notification-bell>`: a framework-free custom element that keeps a WebSocket to a
 * treevu server, shows the unread count, toasts live notifications and lists the inbox.
 *
 * The protocol rules it follows (see README.md): the token goes in the first message, never in
 * a URL; `lastId` (the largest id received) is sent when resuming; every notification is
 * acknowledged; heartbeats are answered; 4401 stops until the token changes, 4403 asks
 * `getToken` again, 4429 and 1013 back off (1013 at least as long as the server asks);
 * reconnects use exponential backoff with full jitter; ids are deduplicated across reconnects.
 */
import {
  CLOSE_EXPIRED,
  CLOSE_RATE_LIMITED,
  CLOSE_TRY_AGAIN_LATER,
  CLOSE_UNAUTHENTICATED,
  countOf,
  httpBaseOf,
  notificationId,
  parseNotification,
  parseServerMessage,
  reconnectDelay,
  retryHintSeconds,
  toWebSocketUrl,
} from "./protocol.js";
import type { BellNotification, BellState, ServerMessage } from "./protocol.js";
import { BELL_CSS } from "./styles.js";

export type { BellNotification, BellState } from "./protocol.js";

/** The tag name `defineNotificationBell()` registers. */
export const NOTIFICATION_BELL_TAG = "treevu-notification-bell";

/** Returns the bearer token; called before each connection (and again after a 4403). */
export type TokenProvider = () => string | Promise<string>;

/** `detail` of the `treevu-error` event. */
export interface BellErrorDetail {
  /** A close code (4401, 4403), a server `error` code, or `"http"`. */
  code: number | string;
  message: string;
}

/** Event names dispatched on the element (they bubble and cross shadow roots). */
export const BELL_EVENTS = {
  notification: "treevu-notification",
  state: "treevu-state",
  unread: "treevu-unread",
  error: "treevu-error",
} as const;

const STATE_LABELS: Record<BellState, string> = {
  connected: "Live",
  reconnecting: "Reconnecting…",
  offline: "Offline",
};

const DEFAULT_TOAST_MS = 6000;
const MAX_TOASTS = 4;
const MAX_ITEMS = 200;
const LIST_LIMIT = 20;
/** No welcome within this long after starting a connection: give it up and retry. */
const OPEN_TIMEOUT_MS = 30_000;
/** The HTTP inbox load that precedes a connection without `lastId` waits at most this long. */
const PRELOAD_TIMEOUT_MS = 5000;
const HTTP_TIMEOUT_MS = 15_000;
/** Without an inbox baseline: frames this soon after a welcome, of notifications created before it, are the replay. */
const REPLAY_WINDOW_MS = 1500;
const REPLAY_CLOCK_SLACK_MS = 1000;

const BELL_ICON =
  '<svg viewBox="0 0 24 24" fill="none" stroke="currentColor" stroke-width="2" ' +
  'stroke-linecap="round" stroke-linejoin="round" aria-hidden="true" focusable="false">' +
  '<path d="M18 8A6 6 0 0 0 6 8c0 7-3 9-3 9h18s-3-2-3-9"/>' +
  '<path d="M13.73 21a2 2 0 0 1-3.46 0"/></svg>';

/** Lets the module load where there is no DOM (server rendering, Node): nothing is defined there. */
const ElementBase: typeof HTMLElement =
  typeof HTMLElement === "undefined"
    ? (class {} as unknown as typeof HTMLElement)
    : HTMLElement;

interface Session {
  readonly ws: WebSocket;
  readonly token: string;
  /** The `lastId` sent in this session's auth message (null: none, a first-time replay). */
  readonly lastIdSent: number | null;
  /** Newest id of the inbox loaded over HTTP just before a session without `lastId`. */
  readonly baseline: number | null;
  welcomed: boolean;
  welcomeAt: number;
  /** Notifications still to come from a `resumed: recovered true` replay. */
  replayRemaining: number;
  heartbeatMs: number;
}

interface ToastEntry {
  el: HTMLElement;
  timer: ReturnType<typeof setTimeout> | null;
  remaining: number;
  startedAt: number;
}

function el<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  props: { className?: string; text?: string; attrs?: Record<string, string> } = {},
): HTMLElementTagNameMap[K] {
  const node = document.createElement(tag);
  if (props.className !== undefined) node.className = props.className;
  if (props.text !== undefined) node.textContent = props.text;
  if (props.attrs !== undefined) {
    for (const [name, value] of Object.entries(props.attrs)) node.setAttribute(name, value);
  }
  return node;
}

function formatTime(timestamp: string, now: number): { text: string; title: string } {
  const t = Date.parse(timestamp);
  if (Number.isNaN(t)) return { text: timestamp, title: timestamp };
  const date = new Date(t);
  const title = date.toLocaleString();
  const seconds = Math.round((now - t) / 1000);
  if (seconds < 45) return { text: "just now", title };
  const minutes = Math.round(seconds / 60);
  if (minutes < 60) return { text: `${minutes} min ago`, title };
  const hours = Math.round(minutes / 60);
  if (hours < 24) return { text: `${hours} h ago`, title };
  const days = Math.round(hours / 24);
  if (days < 7) return { text: days === 1 ? "yesterday" : `${days} days ago`, title };
  return { text: date.toLocaleDateString(), title };
}

class HttpError extends Error {
  readonly status: number;
  constructor(status: number, message: string) {
    super(message);
    this.status = status;
  }
}

/**
 * The notification bell element. Configure it with the `url` and `api-base` attributes (or the
 * `url` / `apiBase` properties) and the `token` or `getToken` property; it connects when it is
 * in the document and has a URL and a token source.
 */
export class NotificationBellElement extends ElementBase {
  static get observedAttributes(): string[] {
    return ["url", "api-base", "toast-duration"];
  }

  // -- configuration -----------------------------------------------------------------------
  #token: string | null = null;
  #getToken: TokenProvider | null = null;

  // -- connection --------------------------------------------------------------------------
  #running = false;
  #session: Session | null = null;
  #connecting = false;
  #generation = 0;
  #state: BellState = "offline";
  #attempt = 0;
  #throttled = 0;
  #retryTimer: ReturnType<typeof setTimeout> | null = null;
  #openTimer: ReturnType<typeof setTimeout> | null = null;
  #watchdogTimer: ReturnType<typeof setTimeout> | null = null;
  /** The token the server refused (4401) or found expired (4403): not tried again. */
  #refusedToken: string | null = null;
  #authBlocked = false;
  #lastToken: string | null = null;
  #lastId: number | null = null;

  // -- data --------------------------------------------------------------------------------
  #items = new Map<number, BellNotification>();
  /** Ids received over the socket, across reconnects: dedupes events, toasts and counts. */
  #seen = new Set<number>();
  #unread = 0;
  #listStale = true;
  #refreshTimer: ReturnType<typeof setTimeout> | null = null;
  #toasts = new Map<number, ToastEntry>();

  // -- view --------------------------------------------------------------------------------
  #built = false;
  #open = false;
  #listDirty = true;
  #button!: HTMLButtonElement;
  #badge!: HTMLSpanElement;
  #conn!: HTMLSpanElement;
  #connLabel!: HTMLSpanElement;
  #panel!: HTMLDivElement;
  #markAll!: HTMLButtonElement;
  #error!: HTMLParagraphElement;
  #list!: HTMLUListElement;
  #empty!: HTMLParagraphElement;
  #toastRegion!: HTMLDivElement;

  #onWindowFocus = (): void => {
    if (this.#running && this.#authBlocked && this.#getToken !== null) this.#credentialsChanged();
  };
  #onDocumentPointerDown = (event: Event): void => {
    if (this.#open && !event.composedPath().includes(this)) this.closePanel(false);
  };
  /** Escape closes the open panel wherever the focus is (inside it, or lost to the body). */
  #onDocumentKeyDown = (event: KeyboardEvent): void => {
    if (!this.#open || event.key !== "Escape") return;
    const active = document.activeElement;
    const inside = event.composedPath().includes(this);
    if (inside) event.preventDefault();
    this.closePanel(inside || active === null || active === document.body);
  };

  constructor() {
    super();
    if (typeof document === "undefined") return;
    this.attachShadow({ mode: "open" });
  }

  // -- properties --------------------------------------------------------------------------

  /** The WebSocket URL (`ws://host:3000/ws`); reflects the `url` attribute. */
  get url(): string {
    return this.getAttribute("url") ?? "";
  }
  set url(value: string | null | undefined) {
    if (value === null || value === undefined || value === "") this.removeAttribute("url");
    else this.setAttribute("url", String(value));
  }

  /** The HTTP base (`http://host:3000`); reflects `api-base`. Defaults to the URL's origin. */
  get apiBase(): string {
    return this.getAttribute("api-base") ?? "";
  }
  set apiBase(value: string | null | undefined) {
    if (value === null || value === undefined || value === "") this.removeAttribute("api-base");
    else this.setAttribute("api-base", String(value));
  }

  /** A bearer token (never reflected to an attribute, never put in a URL). */
  get token(): string | null {
    return this.#token;
  }
  set token(value: string | null | undefined) {
    const next = typeof value === "string" && value !== "" ? value : null;
    if (next === this.#token) return;
    this.#token = next;
    this.#credentialsChanged();
  }

  /** Called before each connection for a fresh token; takes precedence over `token`. */
  get getToken(): TokenProvider | null {
    return this.#getToken;
  }
  set getToken(value: TokenProvider | null | undefined) {
    const next = typeof value === "function" ? value : null;
    if (next === this.#getToken) return;
    this.#getToken = next;
    this.#credentialsChanged();
  }

  /** How long a toast stays, in milliseconds (default 6000); reflects `toast-duration`. */
  get toastDuration(): number {
    const n = Number(this.getAttribute("toast-duration"));
    return Number.isFinite(n) && n > 0 ? n : DEFAULT_TOAST_MS;
  }
  set toastDuration(value: number | null | undefined) {
    if (value === null || value === undefined) this.removeAttribute("toast-duration");
    else this.setAttribute("toast-duration", String(value));
  }

  /** `connected` after a welcome, `reconnecting` while retrying, `offline` otherwise. */
  get state(): BellState {
    return this.#state;
  }

  /** The unread count shown on the badge. */
  get unreadCount(): number {
    return this.#unread;
  }

  /** The notifications the element holds, newest first (copies). */
  get notifications(): BellNotification[] {
    return this.#sortedItems().map((n) => ({ ...n }));
  }

  /** The largest notification id received; sent as `lastId` when reconnecting. */
  get lastId(): number | null {
    return this.#lastId;
  }

  // -- lifecycle ---------------------------------------------------------------------------

  connectedCallback(): void {
    for (const prop of ["url", "apiBase", "token", "getToken", "toastDuration"] as const) {
      this.#upgradeProperty(prop);
    }
    this.#build();
    this.setAttribute("data-state", this.#state);
    this.setAttribute("data-unread", String(this.#unread));
    window.addEventListener("focus", this.#onWindowFocus);
    document.addEventListener("visibilitychange", this.#onWindowFocus);
    if (this.#running) return; // moved in the document: keep the connection
    this.#running = true;
    // Properties set in the same task (a framework applying props) are in place by then.
    queueMicrotask(() => this.#maybeStart());
  }

  disconnectedCallback(): void {
    window.removeEventListener("focus", this.#onWindowFocus);
    document.removeEventListener("visibilitychange", this.#onWindowFocus);
    this.closePanel(false);
    queueMicrotask(() => {
      if (!this.isConnected) this.#stop();
    });
  }

  attributeChangedCallback(name: string, oldValue: string | null, newValue: string | null): void {
    if (oldValue === newValue) return;
    if (name === "url" && this.#running) {
      this.#attempt = 0;
      this.#authBlocked = false;
      this.#refusedToken = null;
      this.#restart();
    }
  }

  // -- public methods ----------------------------------------------------------------------

  /** Drops the current connection (if any) and connects again at once. */
  reconnect(): void {
    this.#authBlocked = false;
    this.#refusedToken = null;
    this.#attempt = 0;
    if (this.isConnected) {
      this.#running = true;
      this.#restart();
    }
  }

  /** Opens the notification list. */
  openPanel(): void {
    if (!this.#built || this.#open) return;
    this.#open = true;
    this.#panel.hidden = false;
    this.#button.setAttribute("aria-expanded", "true");
    this.#renderList();
    document.addEventListener("pointerdown", this.#onDocumentPointerDown, true);
    document.addEventListener("keydown", this.#onDocumentKeyDown, true);
    this.#panel.focus();
    if (this.#listStale) void this.refresh();
  }

  /** Closes the notification list; focus goes back to the bell unless `returnFocus` is false. */
  closePanel(returnFocus = true): void {
    if (!this.#built || !this.#open) return;
    this.#open = false;
    this.#panel.hidden = true;
    this.#button.setAttribute("aria-expanded", "false");
    this.#error.hidden = true;
    document.removeEventListener("pointerdown", this.#onDocumentPointerDown, true);
    document.removeEventListener("keydown", this.#onDocumentKeyDown, true);
    if (returnFocus) this.#button.focus();
  }

  /** Marks one notification read (`POST …/notifications/{id}/read`); the count drops at once. */
  async markAsRead(id: number): Promise<void> {
    if (notificationId(id) === null) return;
    const item = this.#items.get(id);
    if (item?.read === true) return;
    if (item !== undefined) {
      item.read = true;
      this.#setUnread(this.#unread - 1);
      this.#listChanged();
    }
    try {
      const result = await this.#http("POST", `/api/v1/notifications/${id}/read`);
      this.#applyReadResult(result);
    } catch (err) {
      if (item !== undefined && item.read) {
        item.read = false;
        this.#setUnread(this.#unread + 1);
        this.#listChanged();
      }
      this.#showError("Could not mark the notification as read. Try again.", err);
    }
  }

  /** Marks every notification read (`POST …/notifications/read-all`). */
  async markAllAsRead(): Promise<void> {
    const changed = [...this.#items.values()].filter((n) => !n.read);
    const before = this.#unread;
    for (const n of changed) n.read = true;
    this.#setUnread(0);
    this.#listChanged();
    try {
      const result = await this.#http("POST", "/api/v1/notifications/read-all");
      this.#applyReadResult(result);
    } catch (err) {
      for (const n of changed) n.read = false;
      this.#setUnread(before);
      this.#listChanged();
      this.#showError("Could not mark the notifications as read. Try again.", err);
    }
  }

  /** Reloads the newest notifications over HTTP (`GET …/notifications?limit=20`). */
  async refresh(): Promise<void> {
    try {
      await this.#loadInbox(HTTP_TIMEOUT_MS);
    } catch (err) {
      this.#reportHttp(err);
    }
  }

  // -- connection --------------------------------------------------------------------------

  #upgradeProperty(prop: "url" | "apiBase" | "token" | "getToken" | "toastDuration"): void {
    if (Object.prototype.hasOwnProperty.call(this, prop)) {
      const self = this as unknown as Record<string, unknown>;
      const value = self[prop];
      delete self[prop];
      self[prop] = value;
    }
  }

  #hasCredentials(): boolean {
    return this.#getToken !== null || this.#token !== null;
  }

  #maybeStart(): void {
    if (!this.#running || !this.isConnected) return;
    if (this.#session !== null || this.#connecting || this.#retryTimer !== null) return;
    if (this.#authBlocked) return;
    if (this.url === "" || !this.#hasCredentials()) {
      this.#setState("offline");
      return;
    }
    void this.#connect();
  }

  #credentialsChanged(): void {
    if (!this.#running || !this.isConnected) return;
    if (this.#authBlocked) {
      // Offline after 4401 / an expired token: retry only with another token (#connect checks).
      this.#authBlocked = false;
      this.#clearRetry();
      void this.#connect();
      return;
    }
    if (this.#state === "offline") queueMicrotask(() => this.#maybeStart());
  }

  #restart(): void {
    this.#generation += 1;
    this.#dropSession(1000, "reconnecting");
    this.#clearRetry();
    this.#connecting = false;
    queueMicrotask(() => this.#maybeStart());
  }

  #stop(): void {
    this.#running = false;
    this.#generation += 1;
    this.#connecting = false;
    this.#clearRetry();
    this.#dropSession(1000, "closed");
    if (this.#refreshTimer !== null) clearTimeout(this.#refreshTimer);
    this.#refreshTimer = null;
    for (const id of [...this.#toasts.keys()]) this.#dismissToast(id);
    this.#setState("offline");
  }

  #clearRetry(): void {
    if (this.#retryTimer !== null) clearTimeout(this.#retryTimer);
    this.#retryTimer = null;
  }

  #clearSessionTimers(): void {
    if (this.#openTimer !== null) clearTimeout(this.#openTimer);
    if (this.#watchdogTimer !== null) clearTimeout(this.#watchdogTimer);
    this.#openTimer = null;
    this.#watchdogTimer = null;
  }

  /** Forgets the current socket (its late events are ignored) and closes it. */
  #dropSession(code: number, reason: string): void {
    const session = this.#session;
    this.#session = null;
    this.#clearSessionTimers();
    if (session === null) return;
    const { ws } = session;
    ws.onopen = null;
    ws.onmessage = null;
    ws.onerror = null;
    ws.onclose = null;
    try {
      ws.close(code, reason);
    } catch {
      // already closed
    }
  }

  #scheduleConnect(delayMs: number): void {
    this.#clearRetry();
    this.#retryTimer = setTimeout(() => {
      this.#retryTimer = null;
      void this.#connect();
    }, Math.max(0, delayMs));
  }

  async #obtainToken(): Promise<string | null> {
    const provider = this.#getToken;
    const token = provider !== null ? await provider() : this.#token;
    const value = typeof token === "string" && token !== "" ? token : null;
    if (value !== null) this.#lastToken = value;
    return value;
  }

  async #connect(): Promise<void> {
    if (!this.#running || !this.isConnected || this.#session !== null || this.#connecting) return;
    const url = this.url;
    if (url === "") {
      this.#setState("offline");
      return;
    }
    this.#clearRetry();
    this.#connecting = true;
    const generation = ++this.#generation;
    const current = (): boolean => generation === this.#generation && this.#running;
    try {
      let token: string | null;
      try {
        token = await this.#obtainToken();
      } catch (err) {
        if (!current()) return;
        this.#emitError("token", `getToken failed: ${String(err)}`);
        this.#retryLater(null);
        return;
      }
      if (!current()) return;
      if (token === null) {
        this.#setState("offline");
        return;
      }
      if (this.#refusedToken !== null && token === this.#refusedToken) {
        // The server refused this very token: wait for another one (token/getToken set,
        // window focus, reconnect()).
        this.#authBlocked = true;
        this.#setState("offline");
        return;
      }
      this.#refusedToken = null;
      this.#authBlocked = false;

      let wsUrl: string;
      try {
        wsUrl = toWebSocketUrl(url, document.baseURI);
      } catch {
        this.#emitError("url", `invalid WebSocket URL: ${url}`);
        this.#setState("offline");
        return;
      }

      // Without lastId the server replays every unacknowledged notification. Loading the inbox
      // first tells those (id <= its newest) from live ones: no toast, no second count.
      const lastIdSent = this.#lastId;
      let baseline: number | null = null;
      if (lastIdSent === null) {
        try {
          baseline = await this.#loadInbox(PRELOAD_TIMEOUT_MS, token);
        } catch {
          baseline = null; // no HTTP: fall back to timing (see #isReplay)
        }
        if (!current()) return;
      }

      let ws: WebSocket;
      try {
        ws = new WebSocket(wsUrl);
      } catch (err) {
        this.#emitError("url", `cannot open ${wsUrl}: ${String(err)}`);
        this.#retryLater(null);
        return;
      }
      const session: Session = {
        ws,
        token,
        lastIdSent,
        baseline,
        welcomed: false,
        welcomeAt: 0,
        replayRemaining: 0,
        heartbeatMs: 30_000,
      };
      this.#session = session;
      ws.onopen = () => {
        const hello: Record<string, unknown> = { type: "auth", token };
        if (lastIdSent !== null) hello["lastId"] = lastIdSent;
        this.#send(session, hello);
      };
      ws.onmessage = (event: MessageEvent) => this.#onMessage(session, event.data);
      ws.onclose = (event: CloseEvent) => this.#onClose(session, event.code, event.reason);
      ws.onerror = () => {
        // a close event follows
      };
      this.#openTimer = setTimeout(() => {
        if (this.#session === session && !session.welcomed) this.#abandon(session, "no welcome in time");
      }, OPEN_TIMEOUT_MS);
    } finally {
      if (generation === this.#generation) this.#connecting = false;
    }
  }

  /** Gives a silent or stuck socket up and reconnects as after a drop. */
  #abandon(session: Session, reason: string): void {
    this.#dropSession(4000, reason);
    this.#afterClose(session, 1006, reason);
  }

  #send(session: Session, payload: Record<string, unknown>): void {
    if (session.ws.readyState === WebSocket.OPEN) session.ws.send(JSON.stringify(payload));
  }

  #armWatchdog(session: Session): void {
    if (this.#watchdogTimer !== null) clearTimeout(this.#watchdogTimer);
    // Heartbeats come every heartbeatInterval: two missed ones and a margin mean a dead link.
    this.#watchdogTimer = setTimeout(() => {
      if (this.#session === session) this.#abandon(session, "no heartbeat");
    }, session.heartbeatMs * 2 + 10_000);
  }

  #onClose(session: Session, code: number, reason: string): void {
    if (this.#session !== session) return;
    this.#session = null;
    this.#clearSessionTimers();
    this.#afterClose(session, code, reason);
  }

  #afterClose(session: Session, code: number, reason: string): void {
    if (!this.#running) {
      this.#setState("offline");
      return;
    }
    if (code === CLOSE_UNAUTHENTICATED) {
      this.#refusedToken = session.token;
      this.#authBlocked = true;
      this.#emitError(code, reason || "unauthorized");
      this.#setState("offline");
      return;
    }
    if (code === CLOSE_EXPIRED) {
      // Ask for a fresh token at once; the same token again means offline until it changes.
      this.#refusedToken = session.token;
      this.#emitError(code, reason || "token expired");
      if (this.#getToken === null) {
        this.#authBlocked = true;
        this.#setState("offline");
        return;
      }
      this.#setState("reconnecting");
      // At once after a session that was welcomed; backing off if new tokens keep failing.
      this.#scheduleConnect(this.#attempt === 0 ? 0 : reconnectDelay(this.#attempt, null));
      this.#attempt += 1;
      return;
    }
    let hint: number | null = null;
    if (code === CLOSE_RATE_LIMITED) {
      // A welcome resets the attempts, but a server closing us for our pace must not see us
      // back at the base delay every time: keep doubling.
      this.#throttled += 1;
      this.#attempt = Math.max(this.#attempt, this.#throttled);
    } else {
      if (this.#attempt === 0) this.#throttled = 0;
      if (code === CLOSE_TRY_AGAIN_LATER) hint = retryHintSeconds(reason);
    }
    this.#retryLater(hint);
  }

  /** Full-jitter backoff (at least the server's hint, when it gave one), then connect. */
  #retryLater(hintSeconds: number | null): void {
    const delay = reconnectDelay(this.#attempt, hintSeconds);
    this.#attempt += 1;
    this.#setState("reconnecting");
    this.#scheduleConnect(delay);
  }

  // -- messages ----------------------------------------------------------------------------

  #onMessage(session: Session, raw: unknown): void {
    if (this.#session !== session) return;
    if (session.welcomed) this.#armWatchdog(session);
    const msg = parseServerMessage(raw);
    if (msg === null) return;
    switch (msg.type) {
      case "welcome":
        this.#onWelcome(session, msg);
        break;
      case "resumed":
        if (msg["recovered"] === true) {
          session.replayRemaining = countOf(msg["count"]) ?? 0;
        } else {
          session.replayRemaining = 0;
          // More were missed than the server replays: reload the inbox over HTTP.
          this.#listStale = true;
          void this.#loadInbox(HTTP_TIMEOUT_MS).then(
            (newest) => {
              if (newest !== null && newest > 0) {
                this.#lastId = this.#lastId === null ? newest : Math.max(this.#lastId, newest);
              }
            },
            (err: unknown) => this.#reportHttp(err),
          );
        }
        break;
      case "notification":
        this.#onNotification(session, msg["notification"]);
        break;
      case "unread_count": {
        const count = countOf(msg["count"]);
        if (count !== null) {
          this.#setUnread(count);
          if (count === 0) this.#markAllLocal();
          this.#listStale = true;
          if (this.#open) this.#refreshSoon();
        }
        break;
      }
      case "heartbeat":
        this.#send(session, { type: "pong" });
        break;
      case "error": {
        const code = typeof msg["code"] === "string" ? msg["code"] : "error";
        const message = typeof msg["message"] === "string" ? msg["message"] : "";
        this.#emitError(code, message);
        break;
      }
      default:
        break;
    }
  }

  #onWelcome(session: Session, msg: ServerMessage): void {
    session.welcomed = true;
    session.welcomeAt = Date.now();
    const interval = msg["heartbeatInterval"];
    if (typeof interval === "number" && interval > 0 && Number.isFinite(interval)) {
      session.heartbeatMs = interval * 1000;
    }
    if (this.#openTimer !== null) clearTimeout(this.#openTimer);
    this.#openTimer = null;
    this.#armWatchdog(session);
    this.#attempt = 0;
    const unread = countOf(msg["unreadCount"]);
    if (unread !== null) {
      this.#setUnread(unread);
      if (unread === 0) this.#markAllLocal();
    }
    if (session.lastIdSent !== null) this.#listStale = true;
    this.#setState("connected");
  }

  /**
   * Whether a notification is part of the replay that follows a welcome (already counted in
   * `welcome.unreadCount`, not toasted) rather than a live one.
   */
  #isReplay(session: Session, n: BellNotification): boolean {
    if (session.lastIdSent !== null) {
      if (session.replayRemaining > 0) {
        session.replayRemaining -= 1;
        return true;
      }
      return false;
    }
    if (session.baseline !== null) return n.id <= session.baseline;
    // No inbox to compare with: the replay comes at once after the welcome, and its
    // notifications were created before it.
    const soon = Date.now() - session.welcomeAt < REPLAY_WINDOW_MS;
    const created = Date.parse(n.timestamp);
    const before = Number.isNaN(created) || created <= session.welcomeAt + REPLAY_CLOCK_SLACK_MS;
    return soon && before;
  }

  #onNotification(session: Session, payload: unknown): void {
    const n = parseNotification(payload);
    if (n === null) {
      // Still acknowledge an id we can read, so the server does not resend it forever.
      const id =
        typeof payload === "object" && payload !== null
          ? notificationId((payload as Record<string, unknown>)["id"])
          : null;
      if (id !== null) this.#send(session, { type: "ack", id });
      return;
    }
    // Every notification received is acknowledged, duplicates too (the server resent it, so
    // it may lack our earlier ack).
    this.#send(session, { type: "ack", id: n.id });
    const replay = this.#isReplay(session, n);
    const firstTime = !this.#seen.has(n.id);
    this.#seen.add(n.id);
    this.#lastId = this.#lastId === null ? n.id : Math.max(this.#lastId, n.id);
    if (!firstTime) return;

    const existing = this.#items.get(n.id);
    const stored: BellNotification = { ...n, read: n.read || existing?.read === true };
    this.#items.set(n.id, stored);
    this.#trimItems();
    if (!replay && !stored.read) {
      // Live: the server's counts so far did not include it (it sends no unread_count for
      // a new notification), and the person has not seen it.
      this.#setUnread(this.#unread + 1);
      this.#showToast(stored);
    }
    this.#listChanged();
    this.#emit(BELL_EVENTS.notification, { ...stored });
  }

  // -- HTTP --------------------------------------------------------------------------------

  #apiBase(): string {
    const explicit = this.apiBase;
    if (explicit !== "") return explicit.replace(/\/+$/, "");
    return httpBaseOf(toWebSocketUrl(this.url, document.baseURI));
  }

  async #http(
    method: "GET" | "POST",
    path: string,
    timeoutMs: number = HTTP_TIMEOUT_MS,
    token?: string | null,
  ): Promise<unknown> {
    let bearer = token ?? this.#lastToken ?? (await this.#obtainToken());
    if (bearer === null) throw new HttpError(401, "no token");
    const url = this.#apiBase() + path;
    for (let round = 0; ; round += 1) {
      const controller = new AbortController();
      const timer = setTimeout(() => controller.abort(), timeoutMs);
      let response: Response;
      try {
        response = await fetch(url, {
          method,
          headers: { Authorization: `Bearer ${bearer}`, Accept: "application/json" },
          signal: controller.signal,
        });
      } finally {
        clearTimeout(timer);
      }
      if (response.status === 401 && round === 0 && this.#getToken !== null) {
        const fresh = await this.#obtainToken();
        if (fresh !== null && fresh !== bearer) {
          bearer = fresh;
          continue;
        }
      }
      if (!response.ok) throw new HttpError(response.status, `${method} ${path}: HTTP ${response.status}`);
      const text = await response.text();
      return text === "" ? null : (JSON.parse(text) as unknown);
    }
  }

  /**
   * `GET …/notifications?limit=20`, merged into the list (newest page replaces what it covers).
   * Returns the newest id loaded (0 for an empty inbox).
   */
  async #loadInbox(timeoutMs: number, token?: string | null): Promise<number> {
    const body = await this.#http("GET", `/api/v1/notifications?limit=${LIST_LIMIT}`, timeoutMs, token);
    const raw =
      typeof body === "object" && body !== null ? (body as Record<string, unknown>)["items"] : null;
    if (!Array.isArray(raw)) throw new HttpError(0, "unexpected inbox response");
    const items: BellNotification[] = [];
    for (const entry of raw) {
      const n = parseNotification(entry);
      if (n !== null) items.push(n);
    }
    const ids = items.map((n) => n.id);
    const newest = ids.length > 0 ? Math.max(...ids) : 0;
    const oldest = ids.length > 0 ? Math.min(...ids) : 0;
    const full = items.length >= LIST_LIMIT;
    // Drop what the page covers but no longer holds (cleared), keep what it cannot know about.
    for (const id of [...this.#items.keys()]) {
      const covered = id <= newest && (!full || id >= oldest);
      if (covered && !ids.includes(id)) this.#items.delete(id);
    }
    for (const n of items) this.#items.set(n.id, n);
    this.#trimItems();
    this.#listStale = false;
    this.#listChanged();
    return newest;
  }

  #applyReadResult(result: unknown): void {
    if (typeof result !== "object" || result === null) return;
    const count = countOf((result as Record<string, unknown>)["unreadCount"]);
    if (count !== null) this.#setUnread(count);
  }

  #refreshSoon(): void {
    if (this.#refreshTimer !== null) clearTimeout(this.#refreshTimer);
    this.#refreshTimer = setTimeout(() => {
      this.#refreshTimer = null;
      void this.refresh();
    }, 300);
  }

  #reportHttp(err: unknown): void {
    this.#emitError("http", err instanceof Error ? err.message : String(err));
  }

  #showError(text: string, err: unknown): void {
    this.#reportHttp(err);
    if (!this.#built) return;
    this.#error.textContent = text;
    this.#error.hidden = false;
  }

  // -- state -------------------------------------------------------------------------------

  #setState(state: BellState): void {
    this.setAttribute("data-state", state);
    if (this.#built) {
      this.#conn.dataset["state"] = state;
      this.#connLabel.textContent = STATE_LABELS[state];
      this.#conn.title = `Notifications: ${STATE_LABELS[state]}`;
    }
    if (state === this.#state) return;
    this.#state = state;
    this.#emit(BELL_EVENTS.state, state);
  }

  #setUnread(count: number): void {
    const next = Math.max(0, Math.floor(count));
    this.setAttribute("data-unread", String(next));
    if (this.#built) {
      this.#button.setAttribute("aria-label", `Notifications, ${next} unread`);
      this.#badge.textContent = next > 99 ? "99+" : String(next);
      this.#badge.hidden = next === 0;
    }
    this.#updateMarkAll(next);
    if (next === this.#unread) return;
    this.#unread = next;
    this.#emit(BELL_EVENTS.unread, next);
  }

  #markAllLocal(): void {
    let changed = false;
    for (const n of this.#items.values()) {
      if (!n.read) {
        n.read = true;
        changed = true;
      }
    }
    if (changed) this.#listChanged();
  }

  #trimItems(): void {
    if (this.#items.size <= MAX_ITEMS) return;
    const ids = [...this.#items.keys()].sort((a, b) => a - b);
    for (const id of ids.slice(0, this.#items.size - MAX_ITEMS)) this.#items.delete(id);
  }

  #sortedItems(): BellNotification[] {
    return [...this.#items.values()].sort((a, b) => b.id - a.id);
  }

  #emit(type: string, detail: unknown): void {
    this.dispatchEvent(new CustomEvent(type, { detail, bubbles: true, composed: true }));
  }

  #emitError(code: number | string, message: string): void {
    const detail: BellErrorDetail = { code, message };
    this.#emit(BELL_EVENTS.error, detail);
  }

  // -- view --------------------------------------------------------------------------------

  #build(): void {
    if (this.#built) return;
    const root = this.shadowRoot;
    if (root === null) return;
    // A constructed style sheet is not subject to a page's CSP style-src; <style> otherwise.
    let style: HTMLStyleElement | null = null;
    if ("adoptedStyleSheets" in root && typeof CSSStyleSheet !== "undefined" && "replaceSync" in CSSStyleSheet.prototype) {
      const sheet = new CSSStyleSheet();
      sheet.replaceSync(BELL_CSS);
      root.adoptedStyleSheets = [sheet];
    } else {
      style = el("style", { text: BELL_CSS });
    }

    const button = el("button", {
      className: "bell",
      attrs: {
        type: "button",
        part: "button",
        "aria-haspopup": "dialog",
        "aria-expanded": "false",
        "aria-controls": "panel",
        "aria-label": `Notifications, ${this.#unread} unread`,
      },
    });
    button.innerHTML = BELL_ICON; // a constant: no user data
    const badge = el("span", {
      className: "badge",
      text: String(this.#unread),
      attrs: { part: "badge", "aria-hidden": "true" },
    });
    badge.hidden = this.#unread === 0;
    button.append(badge);
    button.addEventListener("click", () => (this.#open ? this.closePanel() : this.openPanel()));

    const conn = el("span", { className: "conn", attrs: { part: "connection" } });
    conn.dataset["state"] = this.#state;
    conn.title = `Notifications: ${STATE_LABELS[this.#state]}`;
    const connLabel = el("span", { className: "conn-label", text: STATE_LABELS[this.#state] });
    conn.append(el("span", { className: "dot", attrs: { "aria-hidden": "true" } }), connLabel);

    const panel = el("div", {
      className: "panel",
      attrs: {
        id: "panel",
        part: "panel",
        role: "dialog",
        "aria-labelledby": "panel-title",
        tabindex: "-1",
      },
    });
    panel.hidden = true;
    const head = el("div", { className: "panel-head" });
    const title = el("div", { className: "panel-title", text: "Notifications", attrs: { id: "panel-title" } });
    const markAll = el("button", {
      className: "link-button mark-all",
      text: "Mark all as read",
      attrs: { type: "button", part: "mark-all" },
    });
    markAll.setAttribute("aria-disabled", "true");
    markAll.addEventListener("click", () => {
      if (markAll.getAttribute("aria-disabled") !== "true") void this.markAllAsRead();
    });
    head.append(title, markAll);
    const error = el("p", { className: "panel-error", attrs: { role: "alert" } });
    error.hidden = true;
    const list = el("ul", {
      className: "list",
      attrs: { part: "list", "aria-label": "Notifications list", tabindex: "0" },
    });
    const empty = el("p", { className: "empty", text: "No notifications yet." });
    panel.append(head, error, list, empty);
    list.addEventListener("click", (event) => {
      const target = event.target instanceof Element ? event.target.closest("button.mark-one") : null;
      const id = Number(target?.getAttribute("data-id"));
      if (target !== null && Number.isSafeInteger(id)) {
        const item = target.closest("li");
        if (item !== null) (item as HTMLElement).focus();
        void this.markAsRead(id);
      }
    });

    const toasts = el("div", {
      className: "toasts",
      attrs: { part: "toasts", role: "status", "aria-live": "polite", "aria-atomic": "false" },
    });

    if (style !== null) root.append(style);
    root.append(button, conn, panel, toasts);
    root.addEventListener("keydown", (event) => this.#onKeyDown(event as KeyboardEvent));

    this.#button = button;
    this.#badge = badge;
    this.#conn = conn;
    this.#connLabel = connLabel;
    this.#panel = panel;
    this.#markAll = markAll;
    this.#error = error;
    this.#list = list;
    this.#empty = empty;
    this.#toastRegion = toasts;
    this.#built = true;
    this.#setUnread(this.#unread);
  }

  /**
   * "Mark all as read" is aria-disabled, not disabled, when there is nothing to mark: a
   * disabled button would drop the focus (to the body) right after being used.
   */
  #updateMarkAll(unread: number): void {
    if (!this.#built) return;
    const none = unread === 0 && ![...this.#items.values()].some((n) => !n.read);
    this.#markAll.setAttribute("aria-disabled", String(none));
  }

  #onKeyDown(event: KeyboardEvent): void {
    if (event.key !== "Escape" || this.#open) return; // the open panel: #onDocumentKeyDown
    const path = event.composedPath();
    const toast = path.find((node) => node instanceof HTMLElement && node.classList.contains("toast"));
    if (toast instanceof HTMLElement) {
      const id = Number(toast.dataset["id"]);
      event.preventDefault();
      this.#dismissToast(id);
      this.#button.focus();
    }
  }

  #listChanged(): void {
    this.#listDirty = true;
    this.#updateMarkAll(this.#unread);
    if (this.#open) this.#renderList();
  }

  #renderList(): void {
    if (!this.#built || !this.#listDirty) return;
    this.#listDirty = false;
    const root = this.shadowRoot;
    const active = root?.activeElement ?? null;
    const focusedItem = active?.closest("li")?.getAttribute("data-id") ?? null;
    const focusedButton = active instanceof HTMLButtonElement && active.classList.contains("mark-one");

    const now = Date.now();
    const items = this.#sortedItems();
    const rows = items.map((n) => {
      const li = el("li", {
        className: "item",
        attrs: { "data-id": String(n.id), "data-read": String(n.read), part: "item", tabindex: "-1" },
      });
      const marker = el("span", { className: "marker" });
      if (!n.read) {
        marker.append(
          el("span", { className: "dot", attrs: { "aria-hidden": "true" } }),
          el("span", { className: "sr-only", text: "Unread" }),
        );
      }
      const body = el("div", { className: "item-body" });
      const titleId = `item-title-${n.id}`;
      body.append(
        el("p", { className: "item-title", text: n.title, attrs: { id: titleId } }),
        el("p", { className: "item-message", text: n.message }),
      );
      const foot = el("div", { className: "item-foot" });
      const when = formatTime(n.timestamp, now);
      foot.append(
        el("time", {
          className: "item-time",
          text: when.text,
          attrs: { datetime: n.timestamp, title: when.title },
        }),
      );
      if (!n.read) {
        foot.append(
          el("button", {
            className: "link-button mark-one",
            text: "Mark as read",
            attrs: { type: "button", "data-id": String(n.id), "aria-describedby": titleId },
          }),
        );
      }
      body.append(foot);
      li.append(marker, body);
      return li;
    });
    this.#list.replaceChildren(...rows);
    this.#list.hidden = rows.length === 0;
    this.#empty.hidden = rows.length !== 0;

    if (focusedItem !== null) {
      const li = this.#list.querySelector<HTMLElement>(`li[data-id="${focusedItem}"]`);
      const again = focusedButton ? li?.querySelector<HTMLElement>("button.mark-one") : null;
      (again ?? li ?? this.#panel).focus();
    }
  }

  // -- toasts ------------------------------------------------------------------------------

  #showToast(n: BellNotification): void {
    if (!this.#built || this.#toasts.has(n.id)) return;
    while (this.#toasts.size >= MAX_TOASTS) {
      const oldest = this.#toasts.keys().next();
      if (oldest.done === true) break;
      this.#dismissToast(oldest.value);
    }
    const toast = el("div", {
      className: "toast",
      attrs: { part: "toast", "data-id": String(n.id) },
    });
    const close = el("button", {
      className: "toast-close",
      text: "×",
      attrs: { type: "button", "aria-label": `Dismiss notification: ${n.title || "notification"}` },
    });
    close.addEventListener("click", () => this.#dismissToast(n.id));
    toast.append(
      el("p", { className: "toast-title", text: n.title }),
      el("p", { className: "toast-message", text: n.message }),
      close,
    );
    const entry: ToastEntry = { el: toast, timer: null, remaining: this.toastDuration, startedAt: 0 };
    const pause = (): void => {
      if (entry.timer === null) return;
      clearTimeout(entry.timer);
      entry.timer = null;
      entry.remaining = Math.max(1000, entry.remaining - (Date.now() - entry.startedAt));
    };
    const resume = (): void => {
      if (entry.timer !== null || !this.#toasts.has(n.id)) return;
      if (toast.matches(":hover") || toast.contains(this.shadowRoot?.activeElement ?? null)) return;
      entry.startedAt = Date.now();
      entry.timer = setTimeout(() => this.#dismissToast(n.id), entry.remaining);
    };
    // Hovering or focusing a toast keeps it (WCAG 2.2.1); it goes on leaving.
    toast.addEventListener("mouseenter", pause);
    toast.addEventListener("focusin", pause);
    toast.addEventListener("mouseleave", () => queueMicrotask(resume));
    toast.addEventListener("focusout", () => queueMicrotask(resume));
    this.#toasts.set(n.id, entry);
    this.#toastRegion.append(toast);
    entry.startedAt = Date.now();
    entry.timer = setTimeout(() => this.#dismissToast(n.id), entry.remaining);
  }

  #dismissToast(id: number): void {
    const entry = this.#toasts.get(id);
    if (entry === undefined) return;
    if (entry.timer !== null) clearTimeout(entry.timer);
    this.#toasts.delete(id);
    entry.el.remove();
  }
}

/**
 * Registers `<treevu-notification-bell>` (once; later calls do nothing). Returns the class.
 * Importing this module calls it already, where `customElements` exists.
 */
export function defineNotificationBell(
  tagName: string = NOTIFICATION_BELL_TAG,
): typeof NotificationBellElement {
  if (typeof customElements !== "undefined" && customElements.get(tagName) === undefined) {
    // A class can be registered under one name only: other names get a subclass.
    const cls =
      tagName === NOTIFICATION_BELL_TAG ? NotificationBellElement : class extends NotificationBellElement {};
    customElements.define(tagName, cls);
  }
  return NotificationBellElement;
}

defineNotificationBell();

declare global {
  interface HTMLElementTagNameMap {
    "treevu-notification-bell": NotificationBellElement;
  }
  interface HTMLElementEventMap {
    "treevu-notification": CustomEvent<BellNotification>;
    "treevu-state": CustomEvent<BellState>;
    "treevu-unread": CustomEvent<number>;
    "treevu-error": CustomEvent<BellErrorDetail>;
  }
}
