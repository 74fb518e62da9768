// The sign-in link carries the token in the URL fragment (never sent to the server); it is
// kept in sessionStorage for this tab and removed from the address bar at once.
const KEY = "treevu.token";

export function takeTokenFromFragment(): void {
  const params = new URLSearchParams(window.location.hash.replace(/^#/, ""));
  const token = params.get("token");
  if (token) {
    sessionStorage.setItem(KEY, token);
    params.delete("token");
    const rest = params.toString();
    history.replaceState(null, "", window.location.pathname + (rest ? `#${rest}` : "#/"));
  }
}

export function token(): string | null {
  return sessionStorage.getItem(KEY);
}

export function signOut(): void {
  sessionStorage.removeItem(KEY);
}
