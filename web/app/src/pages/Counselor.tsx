import { api, type Schemas } from "../api";
import { Problem, useLoad } from "../App";

const NEXT: Record<string, string[]> = {
  open: ["contacted", "in_progress", "resolved", "closed"],
  contacted: ["in_progress", "resolved", "closed"],
  in_progress: ["resolved", "closed"],
};

export function CounselorPage({ me }: { me: Schemas["Me"] }) {
  const list = useLoad(() => api<Schemas["InterventionPage"]>("/interventions?limit=100"));
  const move = async (id: number, status: string) => {
    await api(`/interventions/${id}`, { method: "PATCH", body: JSON.stringify({ status }) });
    list.reload();
  };
  return (
    <main data-page="counselor">
      <section className="card" aria-labelledby="cases-h" style={{ gridColumn: "1 / -1" }}>
        <h2 id="cases-h">Cases assigned to {me.name}</h2>
        <Problem error={list.error} />
        <ul className="plain" data-testid="interventions">
          {(list.data?.items ?? []).map((i) => (
            <li key={i.id} data-testid="case" data-status={i.status}>
              <strong>{i.employeeName}</strong> · <span data-testid="status">{i.status}</span>
              <ol aria-label={`Plan for ${i.employeeName}`}>
                {((i.plan as { steps?: string[] }).steps ?? []).map((s) => (
                  <li key={s}>{s}</li>
                ))}
              </ol>
              {(NEXT[i.status] ?? []).map((s) => (
                <button key={s} onClick={() => move(i.id, s)}>
                  Mark {s.replace("_", " ")}
                </button>
              ))}
            </li>
          ))}
          {list.data && list.data.items.length === 0 && <li>No cases assigned.</li>}
        </ul>
      </section>
    </main>
  );
}
