import {
  ArcElement,
  BarController,
  BarElement,
  CategoryScale,
  Chart,
  DoughnutController,
  Legend,
  LinearScale,
  Tooltip,
} from "chart.js";
import { useEffect, useRef, useState } from "react";
import { api, post, type Schemas } from "../api";
import { Problem, useLoad } from "../App";
import { Analytics } from "./Analytics";

Chart.register(
  ArcElement, BarController, BarElement, CategoryScale, DoughnutController, Legend, LinearScale,
  Tooltip,
);

type Distribution = Schemas["Distribution"];
const COLORS = ["#b3261e", "#e8710a", "#1e6fd9", "#0b8043", "#5b3fa8"];

function DistributionChart({ data, kind, label }: { data: Distribution; kind: "bar" | "doughnut"; label: string }) {
  const canvas = useRef<HTMLCanvasElement>(null);
  useEffect(() => {
    if (!canvas.current) return;
    const chart = new Chart(canvas.current, {
      type: kind,
      data: {
        labels: data.buckets.map((b) => b.name.replace(/_/g, " ")),
        datasets: [{ label, data: data.buckets.map((b) => b.count), backgroundColor: COLORS }],
      },
      options: { animation: false, plugins: { legend: { display: kind === "doughnut" } } },
    });
    return () => chart.destroy();
  }, [data, kind, label]);
  return (
    <figure>
      <canvas ref={canvas} role="img" aria-label={`${label}: ${data.buckets.map((b) => `${b.name} ${b.count}`).join(", ")}`} />
      <figcaption className="muted">
        {label}: {data.total.toLocaleString()} people
      </figcaption>
    </figure>
  );
}

export function AdminPage({ me }: { me: Schemas["Me"] }) {
  const segments = useLoad(() => api<Distribution>("/segments/distribution"));
  const risks = useLoad(() => api<Distribution>("/segments/risk-distribution"));
  const [segment, setSegment] = useState("at_risk");
  const stats = useLoad(() => api<Schemas["SegmentStats"]>(`/segments/${segment}/stats`), [segment]);
  const employees = useLoad(
    () => api<Schemas["SegmentEmployeesPage"]>(`/segments/${segment}/employees?limit=10`),
    [segment],
  );
  const jobs = useLoad(() => api<Schemas["JobOut"][]>("/jobs"));
  const audit = useLoad(() => api<Schemas["AuditPage"]>("/audit?limit=15"));
  const [live, setLive] = useState<number | null>(null);
  useEffect(() => {
    const read = () =>
      fetch("/metrics")
        .then((r) => r.text())
        .then((text) => {
          const line = text.split("\n").find((l) => l.startsWith("treevu_ws_active_connections "));
          setLive(line ? Number(line.split(" ")[1]) : null);
        })
        .catch(() => setLive(null));
    read();
    const timer = setInterval(read, 3000);
    return () => clearInterval(timer);
  }, []);
  return (
    <main data-page="admin">
      <section className="card" aria-labelledby="seg-h">
        <h2 id="seg-h">Segments</h2>
        <Problem error={segments.error} />
        {segments.data && <DistributionChart data={segments.data} kind="bar" label="People per segment" />}
      </section>
      <section className="card" aria-labelledby="risk-h">
        <h2 id="risk-h">Risk</h2>
        <Problem error={risks.error} />
        {risks.data && <DistributionChart data={risks.data} kind="doughnut" label="People per risk level" />}
      </section>
      <section className="card" aria-labelledby="live-h">
        <h2 id="live-h">Live</h2>
        <p>
          <span className="big" data-testid="live-connections">
            {live ?? "—"}
          </span>{" "}
          open connections
        </p>
        <p className="muted">Signed in as {me.name}.</p>
      </section>
      <section className="card" aria-labelledby="stats-h">
        <h2 id="stats-h">Segment statistics</h2>
        <label htmlFor="segment-pick">Segment</label>
        <select id="segment-pick" value={segment} onChange={(e) => setSegment(e.target.value)}>
          {(segments.data?.buckets ?? []).map((b) => (
            <option key={b.name} value={b.name}>
              {b.name.replace(/_/g, " ")}
            </option>
          ))}
        </select>
        <Problem error={stats.error} />
        {stats.data && (
          <p data-testid="segment-stats">
            {stats.data.count.toLocaleString()} people ({stats.data.percentage}%), average FWI{" "}
            {stats.data.avgFwiScore ?? "—"}, wellness {stats.data.avgWellnessScore ?? "—"} —{" "}
            {stats.data.interventionType}
          </p>
        )}
        <table data-testid="segment-employees">
          <thead>
            <tr>
              <th scope="col">Person</th>
              <th scope="col">Wellness</th>
              <th scope="col">Risk</th>
            </tr>
          </thead>
          <tbody>
            {(employees.data?.items ?? []).map((e) => (
              <tr key={e.userId}>
                <td>{e.name}</td>
                <td>{e.wellnessScore}</td>
                <td>{e.riskLevel}</td>
              </tr>
            ))}
          </tbody>
        </table>
      </section>
      <Campaigns />
      <Analytics />
      <section className="card" aria-labelledby="jobs-h">
        <h2 id="jobs-h">Jobs</h2>
        <Problem error={jobs.error} />
        <table data-testid="jobs">
          <thead>
            <tr>
              <th scope="col">Job</th>
              <th scope="col">Schedule</th>
              <th scope="col">Last run</th>
            </tr>
          </thead>
          <tbody>
            {(jobs.data ?? []).map((j) => (
              <tr key={j.name}>
                <td>{j.name}</td>
                <td>{j.schedule}</td>
                <td>{j.lastRun ? `${new Date(j.lastRun.startedAt).toLocaleString()} ${j.lastRun.ok ? "ok" : "failed"}` : "—"}</td>
              </tr>
            ))}
          </tbody>
        </table>
      </section>
      <section className="card" aria-labelledby="audit-h">
        <h2 id="audit-h">Audit log</h2>
        <Problem error={audit.error} />
        <table data-testid="audit">
          <thead>
            <tr>
              <th scope="col">When</th>
              <th scope="col">Action</th>
              <th scope="col">Target</th>
            </tr>
          </thead>
          <tbody>
            {(audit.data?.items ?? []).map((a) => (
              <tr key={a.id}>
                <td>{new Date(a.createdAt).toLocaleString()}</td>
                <td>{a.action}</td>
                <td>{a.target ?? "—"}</td>
              </tr>
            ))}
          </tbody>
        </table>
      </section>
    </main>
  );
}

function Campaigns() {
  const list = useLoad(() => api<Schemas["CampaignPage"]>("/campaigns?limit=10"));
  const [form, setForm] = useState({
    name: "",
    segment: "at_risk",
    campaignType: "retention",
    title: "",
    message: "",
    pacePerMinute: "",
  });
  const [error, setError] = useState<string | null>(null);
  useEffect(() => {
    const timer = setInterval(list.reload, 2000);
    return () => clearInterval(timer);
  }, [list.reload]);
  const create = async (event: React.FormEvent) => {
    event.preventDefault();
    try {
      await post("/campaigns", {
        ...form,
        pacePerMinute: form.pacePerMinute ? Number(form.pacePerMinute) : undefined,
      });
      setError(null);
      setForm({ ...form, name: "", title: "", message: "" });
      list.reload();
    } catch (e) {
      setError(e instanceof Error ? e.message : String(e));
    }
  };
  const field = (key: keyof typeof form, label: string) => (
    <>
      <label htmlFor={`c-${key}`}>{label}</label>
      <input id={`c-${key}`} value={form[key]} onChange={(e) => setForm({ ...form, [key]: e.target.value })} />
    </>
  );
  return (
    <section className="card" aria-labelledby="camp-h" style={{ gridColumn: "1 / -1" }}>
      <h2 id="camp-h">Campaigns</h2>
      <form onSubmit={create} data-testid="campaign-form">
        {field("name", "Name")}
        <label htmlFor="c-segment">Segment</label>
        <select id="c-segment" value={form.segment} onChange={(e) => setForm({ ...form, segment: e.target.value })}>
          {["crisis_intervention", "at_risk", "steady_performers", "rising_stars", "financial_champions"].map((s) => (
            <option key={s}>{s}</option>
          ))}
        </select>
        <label htmlFor="c-type">Type</label>
        <select id="c-type" value={form.campaignType} onChange={(e) => setForm({ ...form, campaignType: e.target.value })}>
          {["retention", "engagement", "education", "intervention", "promotion"].map((s) => (
            <option key={s}>{s}</option>
          ))}
        </select>
        {field("title", "Title (may use {firstName}, {tierName}, {segmentName})")}
        {field("message", "Message")}
        {field("pacePerMinute", "Pace per minute (empty: the admin limit)")}
        <p>
          <button className="primary" type="submit">
            Create campaign
          </button>
        </p>
        <Problem error={error} />
      </form>
      <table data-testid="campaigns">
        <thead>
          <tr>
            <th scope="col">Campaign</th>
            <th scope="col">Status</th>
            <th scope="col">Progress</th>
            <th scope="col">Performance</th>
            <th scope="col">Actions</th>
          </tr>
        </thead>
        <tbody>
          {(list.data?.items ?? []).map((c) => (
            <tr key={c.id}>
              <td>{c.name}</td>
              <td>{c.status}</td>
              <td>
                {c.sent.toLocaleString()} / {c.targeted.toLocaleString()}
              </td>
              <td>
                <CampaignPerformance id={c.id} sent={c.sent} />
              </td>
              <td>
                {c.status === "running" && <button onClick={() => post(`/campaigns/${c.id}/pause`).then(list.reload)}>Pause</button>}
                {c.status === "paused" && <button onClick={() => post(`/campaigns/${c.id}/resume`).then(list.reload)}>Resume</button>}
              </td>
            </tr>
          ))}
        </tbody>
      </table>
    </section>
  );
}

function CampaignPerformance({ id, sent }: { id: number; sent: number }) {
  const stats = useLoad(() => api<Schemas["CampaignStats"]>(`/campaigns/${id}/stats`), [id, sent]);
  if (!stats.data) return <span className="muted">—</span>;
  const s = stats.data;
  return (
    <span data-testid="campaign-performance">
      delivered {s.delivered}, opened {s.opened}, clicked {s.clicked}, converted {s.converted}
    </span>
  );
}
