/**
 * Default styling of the bell, inside its shadow root. Every piece has its own background, so
 * its contrast does not depend on the page behind it (a dark header, a light one). Colours can
 * be changed with the `--treevu-bell-*` custom properties or the `::part(...)` selectors.
 */
export const BELL_CSS: string = `
:host {
  display: inline-flex;
  position: relative;
  align-items: center;
  gap: 0.5rem;
  font-family: var(--treevu-bell-font, system-ui, -apple-system, "Segoe UI", Roboto, sans-serif);
  font-size: 14px;
  line-height: 1.4;
  vertical-align: middle;
}
:host([hidden]) { display: none; }
[hidden] { display: none !important; }
*, *::before, *::after { box-sizing: border-box; }

.sr-only {
  position: absolute; width: 1px; height: 1px; padding: 0; margin: -1px;
  overflow: hidden; clip: rect(0 0 0 0); white-space: nowrap; border: 0;
}

button { font: inherit; cursor: pointer; }
button:focus-visible, [tabindex]:focus-visible {
  outline: 3px solid var(--treevu-bell-focus, #2563eb);
  outline-offset: 2px;
}

.bell {
  position: relative;
  display: inline-flex; align-items: center; justify-content: center;
  width: 2.25rem; height: 2.25rem; padding: 0;
  border-radius: 999px;
  border: 1px solid var(--treevu-bell-border, #6b7280);
  background: var(--treevu-bell-bg, #ffffff);
  color: var(--treevu-bell-fg, #111827);
}
.bell:hover { background: var(--treevu-bell-bg-hover, #f3f4f6); }
.bell svg { width: 1.25rem; height: 1.25rem; }
.badge {
  position: absolute; top: -0.4rem; right: -0.45rem;
  min-width: 1.25rem; height: 1.25rem; padding: 0 0.3rem;
  border-radius: 999px; border: 2px solid #ffffff;
  background: var(--treevu-bell-badge-bg, #b91c1c);
  color: var(--treevu-bell-badge-fg, #ffffff);
  font-size: 11px; font-weight: 700; line-height: 1rem; text-align: center;
}

.conn {
  display: inline-flex; align-items: center; gap: 0.35rem;
  padding: 0.1rem 0.5rem; border-radius: 999px;
  font-size: 12px; font-weight: 600; white-space: nowrap;
  background: #f3f4f6; color: #374151;
}
.conn .dot { width: 0.5rem; height: 0.5rem; border-radius: 50%; background: #6b7280; }
.conn[data-state="connected"] { background: #dcfce7; color: #14532d; }
.conn[data-state="connected"] .dot { background: #15803d; }
.conn[data-state="reconnecting"] { background: #fef3c7; color: #78350f; }
.conn[data-state="reconnecting"] .dot { background: #b45309; }

.panel {
  position: absolute; top: calc(100% + 0.5rem); right: 0; z-index: 1000;
  width: min(24rem, calc(100vw - 1rem));
  background: #ffffff; color: #111827;
  border: 1px solid #d1d5db; border-radius: 0.5rem;
  box-shadow: 0 10px 25px rgba(0, 0, 0, 0.18);
  text-align: left;
}
.panel:focus { outline: none; }
.panel:focus-visible { outline: 3px solid var(--treevu-bell-focus, #2563eb); outline-offset: 2px; }
.panel-head {
  display: flex; align-items: center; justify-content: space-between; gap: 0.5rem;
  padding: 0.6rem 0.75rem; border-bottom: 1px solid #e5e7eb;
}
.panel-title { font-size: 15px; font-weight: 700; margin: 0; }
.link-button {
  border: 1px solid transparent; background: transparent; padding: 0.15rem 0.4rem;
  border-radius: 0.25rem;
  color: var(--treevu-bell-accent, #1d4ed8); font-size: 13px; font-weight: 600;
}
.link-button:hover { text-decoration: underline; }
.link-button[aria-disabled="true"] { color: #4b5563; cursor: default; text-decoration: none; }
.panel-error { margin: 0; padding: 0.4rem 0.75rem; color: #991b1b; background: #fef2f2; font-size: 13px; }
.list {
  list-style: none; margin: 0; padding: 0;
  max-height: min(26rem, 70vh); overflow-y: auto;
}
.empty { margin: 0; padding: 1rem 0.75rem; color: #4b5563; }
.item {
  display: grid; grid-template-columns: 0.75rem 1fr; gap: 0.1rem 0.4rem;
  padding: 0.6rem 0.75rem; border-bottom: 1px solid #e5e7eb;
  background: #ffffff;
}
.item:last-child { border-bottom: 0; }
.item[data-read="false"] { background: #eff6ff; }
.item:focus { outline: none; }
.item:focus-visible { outline: 3px solid var(--treevu-bell-focus, #2563eb); outline-offset: -3px; }
.marker { padding-top: 0.4rem; }
.marker .dot { display: block; width: 0.5rem; height: 0.5rem; border-radius: 50%; background: #1d4ed8; }
.item-body { min-width: 0; }
.item-title { margin: 0; font-weight: 600; color: #111827; overflow-wrap: anywhere; }
.item-message { margin: 0.1rem 0 0; color: #374151; overflow-wrap: anywhere; }
.item-foot { display: flex; align-items: center; justify-content: space-between; gap: 0.5rem; margin-top: 0.25rem; }
.item-time { font-size: 12px; color: #4b5563; }

.toasts {
  position: fixed; bottom: 1rem; right: 1rem; z-index: 2147483000;
  display: flex; flex-direction: column; gap: 0.5rem;
  width: min(22rem, calc(100vw - 2rem));
  pointer-events: none;
}
.toast {
  pointer-events: auto;
  display: grid; grid-template-columns: 1fr auto; gap: 0.1rem 0.5rem; align-items: start;
  padding: 0.65rem 0.75rem; border-radius: 0.5rem;
  background: var(--treevu-bell-toast-bg, #1f2937);
  color: var(--treevu-bell-toast-fg, #f9fafb);
  box-shadow: 0 10px 25px rgba(0, 0, 0, 0.25);
  text-align: left;
}
.toast-title { margin: 0; font-weight: 700; overflow-wrap: anywhere; }
.toast-message { margin: 0; grid-column: 1; color: #e5e7eb; overflow-wrap: anywhere; }
.toast-close {
  grid-column: 2; grid-row: 1 / span 2;
  width: 1.75rem; height: 1.75rem; padding: 0; line-height: 1;
  border: 0; border-radius: 0.25rem; background: transparent;
  color: #f9fafb; font-size: 1.1rem;
}
.toast-close:hover { background: #374151; }

@media (prefers-reduced-motion: no-preference) {
  .toast { animation: treevu-bell-in 160ms ease-out; }
  @keyframes treevu-bell-in { from { opacity: 0; transform: translateY(-0.25rem); } to { opacity: 1; transform: none; } }
}
`;
