import { useCallback, useEffect, useState } from "react";
import { WebSocketNotificationBell } from "../../bell/src/react";
import { api, ApiError, type Schemas } from "./api";
import { signOut, token } from "./auth";
import { AdminPage } from "./pages/Admin";
import { CounselorPage } from "./pages/Counselor";
import { EmployeePage } from "./pages/Employee";
import { ManagerPage } from "./pages/Manager";

type Me = Schemas["Me"];
const PAGES = ["employee", "manager", "counselor", "admin"] as const;
type Page = (typeof PAGES)[number];

/** Loads ``load()`` and reloads it when ``reload`` is called; errors are shown, not thrown. */
export function useLoad<T>(load: () => Promise<T>, deps: unknown[] = []) {
  const [data, setData] = useState<T | null>(null);
  const [error, setError] = useState<string | null>(null);
  const reload = useCallback(() => {
    load().then(
      (value) => {
        setData(value);
        setError(null);
      },
      (e: unknown) => setError(e instanceof Error ? e.message : String(e)),
    );
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, deps);
  useEffect(reload, [reload]);
  return { data, error, reload };
}

export function Problem({ error }: { error: string | null }) {
  return error ? (
    <p className="error" role="alert">
      {error}
    </p>
  ) : null;
}

function currentPage(): string {
  return window.location.hash.replace(/^#\/?/, "").split("?")[0] ?? "";
}

export function App() {
  const [me, setMe] = useState<Me | null>(null);
  const [error, setError] = useState<string | null>(token() ? null : "Sign in with your link.");
  const [page, setPage] = useState(currentPage());

  useEffect(() => {
    const onHash = () => setPage(currentPage());
    window.addEventListener("hashchange", onHash);
    return () => window.removeEventListener("hashchange", onHash);
  }, []);
  useEffect(() => {
    if (!token()) return;
    api<Me>("/me").then(setMe, (e: unknown) =>
      setError(e instanceof ApiError && e.status === 401 ? "Your sign-in link has expired." : String(e)),
    );
  }, []);

  if (error) {
    return (
      <main>
        <section className="card">
          <h1>Treevü Engage</h1>
          <p className="error">{error}</p>
        </section>
      </main>
    );
  }
  if (!me) return <p aria-busy="true">Loading…</p>;
  const wanted = (page || me.role) as Page;
  const wsUrl = `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/ws`;
  return (
    <>
      <header className="top">
        <h1>Treevü Engage</h1>
        <span className="who">
          {me.name} · {me.role}
        </span>
        <WebSocketNotificationBell url={wsUrl} apiBase={location.origin} token={token() ?? ""} />
        <button
          onClick={() => {
            signOut();
            location.hash = "";
            location.reload();
          }}
        >
          Sign out
        </button>
      </header>
      {!PAGES.includes(wanted) || wanted !== me.role ? (
        <main>
          <section className="card" data-testid="forbidden">
            <h2>Not allowed</h2>
            <p>
              This page is for the {PAGES.includes(wanted) ? wanted : "unknown"} role; you are
              signed in as {me.role}. <a href={`#/${me.role}`}>Go to your page</a>.
            </p>
          </section>
        </main>
      ) : me.role === "employee" ? (
        <EmployeePage me={me} />
      ) : me.role === "manager" ? (
        <ManagerPage me={me} />
      ) : me.role === "counselor" ? (
        <CounselorPage me={me} />
      ) : (
        <AdminPage me={me} />
      )}
    </>
  );
}
