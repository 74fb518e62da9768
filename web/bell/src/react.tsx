/**
 * React wrapper of `<treevu-notification-bell>`.
 *
 * It uses no hooks: the element's properties and event handlers are applied in a callback ref,
 * so the wrapper works with React 18 and 19 alike (React 18 only sets attributes on custom
 * elements) and does not break if a bundler ends up with a second copy of React.
 */
import { createElement } from "react";
import type { ReactElement } from "react";
import { defineNotificationBell, NOTIFICATION_BELL_TAG } from "./bell.js";
import type {
  BellErrorDetail,
  BellNotification,
  BellState,
  NotificationBellElement,
  TokenProvider,
} from "./bell.js";

export interface WebSocketNotificationBellProps {
  /** WebSocket URL, e.g. `ws://127.0.0.1:3000/ws` (never put a token in it). */
  url: string;
  /** HTTP base for the inbox API, e.g. `http://127.0.0.1:3000`. */
  apiBase: string;
  /** Bearer token; a new value reconnects an element that the server refused (4401). */
  token?: string | null | undefined;
  /** Called before each connection for a fresh token; preferred over `token` when both are given. */
  getToken?: TokenProvider | null | undefined;
  /** Called once per notification the socket delivers (live or replayed after a reconnect). */
  onNotification?: ((notification: BellNotification) => void) | undefined;
  /** Called when the connection state changes. */
  onStateChange?: ((state: BellState) => void) | undefined;
  /** Called when the unread count changes. */
  onUnreadChange?: ((count: number) => void) | undefined;
  /** Called on auth closes (4401/4403), server `error` messages and failed HTTP calls. */
  onError?: ((error: BellErrorDetail) => void) | undefined;
  /** Class name(s) of the `<treevu-notification-bell>` element. */
  className?: string | undefined;
  /** How long a toast stays, in milliseconds (default 6000). */
  toastDuration?: number | undefined;
}

type Handlers = Pick<
  WebSocketNotificationBellProps,
  "onNotification" | "onStateChange" | "onUnreadChange" | "onError"
>;

/** The latest handlers of each element; one listener per event per element reads them. */
const handlers = new WeakMap<NotificationBellElement, Handlers>();

function listen(element: NotificationBellElement): void {
  element.addEventListener("treevu-notification", (event) => {
    handlers.get(element)?.onNotification?.((event as CustomEvent<BellNotification>).detail);
  });
  element.addEventListener("treevu-state", (event) => {
    handlers.get(element)?.onStateChange?.((event as CustomEvent<BellState>).detail);
  });
  element.addEventListener("treevu-unread", (event) => {
    handlers.get(element)?.onUnreadChange?.((event as CustomEvent<number>).detail);
  });
  element.addEventListener("treevu-error", (event) => {
    handlers.get(element)?.onError?.((event as CustomEvent<BellErrorDetail>).detail);
  });
}

/**
 * Renders `<treevu-notification-bell>` and forwards the props to its properties and its events
 * to the callbacks:
 *
 * ```tsx
 * <header>
 *   <WebSocketNotificationBell url="ws://127.0.0.1:3000/ws" apiBase="http://127.0.0.1:3000" token={jwt} />
 * </header>
 * ```
 */
export function WebSocketNotificationBell(props: WebSocketNotificationBellProps): ReactElement {
  defineNotificationBell();
  const { url, apiBase, token, getToken, className, toastDuration } = props;
  const ref = (element: NotificationBellElement | null): void => {
    if (element === null) return;
    if (!handlers.has(element)) listen(element);
    handlers.set(element, {
      onNotification: props.onNotification,
      onStateChange: props.onStateChange,
      onUnreadChange: props.onUnreadChange,
      onError: props.onError,
    });
    element.url = url;
    element.apiBase = apiBase;
    element.getToken = getToken ?? null;
    element.token = token ?? null;
    element.toastDuration = toastDuration ?? null;
  };
  // Attributes too, so that server-rendered HTML carries the configuration (never the token).
  const attributes: Record<string, unknown> = { ref, url, "api-base": apiBase };
  if (className !== undefined && className !== "") attributes["class"] = className;
  if (toastDuration !== undefined) attributes["toast-duration"] = String(toastDuration);
  return createElement(NOTIFICATION_BELL_TAG, attributes);
}

export default WebSocketNotificationBell;
