/**
 * `@treevu/notification-bell`: the `<treevu-notification-bell>` custom element (registered on
 * import) and its React wrapper. Without React, import `@treevu/notification-bell/element`.
 */
export {
  BELL_EVENTS,
  NOTIFICATION_BELL_TAG,
  NotificationBellElement,
  defineNotificationBell,
} from "./bell.js";
export type { BellErrorDetail, BellNotification, BellState, TokenProvider } from "./bell.js";
export { WebSocketNotificationBell } from "./react.js";
export type { WebSocketNotificationBellProps } from "./react.js";
export {
  BACKOFF_BASE_MS,
  BACKOFF_CAP_MS,
  CLOSE_EXPIRED,
  CLOSE_RATE_LIMITED,
  CLOSE_TRY_AGAIN_LATER,
  CLOSE_UNAUTHENTICATED,
  backoffCeiling,
  backoffDelay,
  reconnectDelay,
  retryHintSeconds,
} from "./protocol.js";
