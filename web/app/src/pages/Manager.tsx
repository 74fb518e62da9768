import { api, type Schemas } from "../api";
import { Problem, useLoad } from "../App";

export function ManagerPage({ me }: { me: Schemas["Me"] }) {
  const overview = useLoad(() => api<Schemas["TeamOverview"]>("/team/overview"));
  const alerts = useLoad(() => api<Schemas["TeamAlerts"]>("/team/alerts"));
  return (
    <main data-page="manager">
      <section className="card" aria-labelledby="team-h">
        <h2 id="team-h">Your team</h2>
        <Problem error={overview.error} />
        {overview.data && (
          <>
            <p>
              {overview.data.teamSize} direct reports of {me.name}. Groups smaller than 5 are not
              shown, so that no one is singled out.
            </p>
            <table data-testid="team-overview">
              <thead>
                <tr>
                  <th scope="col">Segment</th>
                  <th scope="col">People</th>
                </tr>
              </thead>
              <tbody>
                {Object.entries(overview.data.segments).map(([segment, count]) => (
                  <tr key={segment}>
                    <td>{segment.replace(/_/g, " ")}</td>
                    <td>{count === "suppressed" ? "hidden" : String(count)}</td>
                  </tr>
                ))}
              </tbody>
            </table>
          </>
        )}
      </section>
      <section className="card" aria-labelledby="alerts-h">
        <h2 id="alerts-h">People getting support</h2>
        <Problem error={alerts.error} />
        <ul className="plain" data-testid="team-alerts">
          {(alerts.data?.items ?? []).map((a) => (
            <li key={a.employeeId}>
              <strong>{a.employeeName}</strong> — {a.support}, since{" "}
              {new Date(a.since).toLocaleDateString()}
            </li>
          ))}
          {alerts.data && alerts.data.items.length === 0 && <li>No one on your team right now.</li>}
        </ul>
      </section>
    </main>
  );
}
