import {
  BarController,
  BarElement,
  CategoryScale,
  Chart,
  type ChartConfiguration,
  Legend,
  LinearScale,
  LineController,
  LineElement,
  PointElement,
  Tooltip,
} from "chart.js";
import { useEffect, useMemo, useRef, useState } from "react";
import { api, type Schemas } from "../api";
import { Problem, useLoad } from "../App";

Chart.register(
  BarController, BarElement, CategoryScale, Legend, LinearScale, LineController, LineElement,
  PointElement, Tooltip,
);

/** A count the server may hide as "<5" (small cells are never shown exactly). */
type Count = number | string;
type CohortRate = "engagedRate" | "retainedRate" | "sameSegmentRate";

const SEGMENT_COLORS: Record<string, string> = {
  crisis_intervention: "#b3261e",
  at_risk: "#e8710a",
  steady_performers: "#1e6fd9",
  rising_stars: "#0b8043",
  financial_champions: "#5b3fa8",
};
const COHORT_RATES: [CohortRate, string][] = [
  ["engagedRate", "Engaged"],
  ["retainedRate", "Still here"],
  ["sameSegmentRate", "In the same segment"],
];
const HORIZONS = [1, 2, 3, 4, 5, 6];

const segmentName = (s: string) => s.replace(/_/g, " ");
const count = (c: Count | null | undefined) =>
  c === null || c === undefined ? "—" : typeof c === "string" ? c : c.toLocaleString();
const pct = (r: number | null | undefined) => (r === null || r === undefined ? "—" : `${(r * 100).toFixed(1)}%`);
const signed = (x: number, digits: number) => `${x > 0 ? "+" : x < 0 ? "−" : ""}${Math.abs(x).toFixed(digits)}`;

/** A validation answer (422: a JSON list of problems) as a sentence; other messages as they are. */
function readable(error: string | null): string | null {
  if (!error?.startsWith("[")) return error;
  try {
    const problems = JSON.parse(error) as { loc?: unknown[]; msg?: string }[];
    return problems.map((p) => `${String(p.loc?.at(-1) ?? "")}: ${p.msg ?? ""}`).join("; ");
  } catch {
    return error;
  }
}

/** Loads ``load()`` whenever ``deps`` change and keeps only the latest answer: a slow answer to
 * an earlier pick never replaces the one to the current pick. */
function useLatest<T>(load: () => Promise<T>, deps: unknown[]) {
  const [state, setState] = useState<{ data: T | null; error: string | null }>({ data: null, error: null });
  useEffect(() => {
    let current = true;
    load().then(
      (data) => current && setState({ data, error: null }),
      (e: unknown) => current && setState({ data: null, error: e instanceof Error ? e.message : String(e) }),
    );
    return () => {
      current = false;
    };
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, deps);
  return state;
}

/** A Chart.js canvas; ``config`` must keep its identity between renders (useMemo). */
function ChartCanvas({ config, label, testId }: { config: ChartConfiguration<"line"> | ChartConfiguration<"bar">; label: string; testId: string }) {
  const canvas = useRef<HTMLCanvasElement>(null);
  useEffect(() => {
    if (!canvas.current) return;
    const chart = new Chart(canvas.current, config as ChartConfiguration);
    return () => chart.destroy();
  }, [config]);
  return <canvas ref={canvas} role="img" aria-label={label} data-testid={testId} />;
}

/** The admin's analytics (SPEC §10): transitions, cohorts, churn, intervention effect, experiments. */
export function Analytics() {
  const cohorts = useLoad(() => api<Schemas["CohortsOut"]>("/analytics/cohorts"));
  const months = useMemo(() => {
    const held = new Set<string>();
    for (const c of cohorts.data?.cohorts ?? []) for (const m of c.months) held.add(m.month);
    return [...held].sort();
  }, [cohorts.data]);
  return (
    <section className="analytics" aria-labelledby="analytics-h" data-testid="analytics">
      <h2 id="analytics-h">Analytics</h2>
      <Transitions months={months} free={cohorts.error !== null} />
      <Cohorts data={cohorts.data} error={cohorts.error} />
      <ChurnRates />
      <InterventionEffect />
      <Experiment />
    </section>
  );
}

/** The colour of a heat-map cell: white to green on a log scale; dark text stays readable on all. */
function heat(c: Count, max: number): string {
  if (typeof c === "string") return "#eef0f2";
  const t = max > 0 ? Math.log1p(c) / Math.log1p(max) : 0;
  const mix = (a: number, b: number) => Math.round(a + (b - a) * t);
  return `rgb(${mix(255, 60)}, ${mix(255, 160)}, ${mix(255, 130)})`;
}

function MonthPick({ id, label, value, months, free, onChange, isDisabled }: {
  id: string;
  label: string;
  value: string;
  months: string[];
  free: boolean;
  onChange: (month: string) => void;
  isDisabled: (month: string) => boolean;
}) {
  return (
    <span>
      <label htmlFor={id}>{label}</label>
      {!free ? (
        <select id={id} value={value} disabled={!months.length} onChange={(e) => onChange(e.target.value)}>
          {months.map((m) => (
            <option key={m} value={m} disabled={isDisabled(m)}>
              {m}
            </option>
          ))}
        </select>
      ) : (
        // No cohorts to list the months held: any month, and the server's answer names them.
        <input id={id} type="month" value={value} onChange={(e) => onChange(e.target.value)} />
      )}
    </span>
  );
}

function Transitions({ months, free }: { months: string[]; free: boolean }) {
  const [pair, setPair] = useState<{ from: string; to: string } | null>(null);
  // Until the admin picks, the latest two months held.
  const from = pair?.from ?? months.at(-2) ?? "";
  const to = pair?.to ?? months.at(-1) ?? "";
  const result = useLatest(
    () =>
      from && to
        ? api<Schemas["TransitionsOut"]>(`/analytics/transitions?from=${from}-01&to=${to}-01`)
        : Promise.resolve(null),
    [from, to],
  );
  const t = result.data;
  const max = t ? Math.max(0, ...t.counts.flat().map((c) => (typeof c === "number" ? c : 0))) : 0;
  return (
    <section className="card wide" aria-labelledby="transitions-h">
      <h3 id="transitions-h">Segment transitions</h3>
      <div className="controls">
        <MonthPick id="transitions-from" label="From month" value={from} months={months} free={free}
          onChange={(m) => setPair({ from: m, to: to > m ? to : (months.find((x) => x > m) ?? to) })}
          isDisabled={(m) => m === months.at(-1)} />
        <MonthPick id="transitions-to" label="To month" value={to} months={months} free={free}
          onChange={(m) => setPair({ from, to: m })} isDisabled={(m) => m <= from} />
      </div>
      <Problem error={readable(result.error)} />
      {t && !result.error && (
        <>
          <div className="scroll">
            <table className="heatmap" data-testid="transitions">
              <caption>
                Where the people in each segment in {t.from} (rows) were in {t.to} (columns)
              </caption>
              <thead>
                <tr>
                  <th scope="col">In {t.from} ↓ / in {t.to} →</th>
                  {t.segments.map((s) => (
                    <th scope="col" key={s}>{segmentName(s)}</th>
                  ))}
                  <th scope="col">Left</th>
                </tr>
              </thead>
              <tbody>
                {t.segments.map((s, i) => (
                  <tr key={s}>
                    <th scope="row">{segmentName(s)}</th>
                    {(t.counts[i] ?? []).map((c, j) => (
                      <td key={j} className="cell" data-testid="transition-cell" data-from={s}
                        data-to={t.segments[j]} style={{ background: heat(c, max) }}>
                        {count(c)}
                      </td>
                    ))}
                    <td>{count(t.left[s])}</td>
                  </tr>
                ))}
                <tr>
                  <th scope="row">Joined</th>
                  {t.segments.map((s) => (
                    <td key={s}>{count(t.joined[s])}</td>
                  ))}
                  <td />
                </tr>
              </tbody>
            </table>
          </div>
          <p data-testid="transitions-summary">
            Stayed in their segment: <strong>{count(t.stayed)}</strong> · moved: <strong>{count(t.moved)}</strong>
            <span className="muted"> · darker cells hold more people; “&lt;5” hides small counts</span>
          </p>
        </>
      )}
    </section>
  );
}

function Cohorts({ data, error }: { data: Schemas["CohortsOut"] | null; error: string | null }) {
  const [rate, setRate] = useState<CohortRate>("engagedRate");
  const rateName = COHORT_RATES.find(([key]) => key === rate)?.[1] ?? rate;
  const config = useMemo((): ChartConfiguration<"line"> | null => {
    if (!data) return null;
    const last = Math.max(0, ...data.cohorts.flatMap((c) => c.months.map((m) => m.offset)));
    const offsets = Array.from({ length: last + 1 }, (_, k) => k);
    const n = data.cohorts.length;
    return {
      type: "line",
      data: {
        labels: offsets.map(String),
        datasets: data.cohorts.map((c, k) => {
          const byOffset = new Map(c.months.map((m) => [m.offset, m[rate]]));
          const color = `hsl(${Math.round((k * 300) / Math.max(1, n))}, 65%, 38%)`;
          return {
            label: c.leftCensored ? `${c.entryMonth} (or before)` : c.entryMonth,
            data: offsets.map((o) => {
              const r = byOffset.get(o);
              return r === null || r === undefined ? null : r * 100;
            }),
            borderColor: color,
            backgroundColor: color,
            pointRadius: 2,
          };
        }),
      },
      options: {
        animation: false,
        scales: {
          x: { title: { display: true, text: "months since joining" } },
          y: { title: { display: true, text: `${rateName} (%)` }, suggestedMax: 100 },
        },
        plugins: { legend: { position: "bottom", labels: { boxWidth: 12 } } },
      },
    };
  }, [data, rate, rateName]);
  return (
    <section className="card" aria-labelledby="cohorts-h">
      <h3 id="cohorts-h">Cohorts</h3>
      <label htmlFor="cohort-rate">Measure</label>
      <select id="cohort-rate" value={rate} onChange={(e) => setRate(e.target.value as CohortRate)}>
        {COHORT_RATES.map(([key, name]) => (
          <option key={key} value={key}>{name}</option>
        ))}
      </select>
      <Problem error={error} />
      {data && config && (
        <figure>
          <ChartCanvas config={config} testId="cohorts-chart"
            label={`${rateName} by months since joining, one line per entry month: ${data.cohorts
              .map((c) => `${c.entryMonth} ${c.months.map((m) => pct(m[rate])).join(" ")}`)
              .join("; ")}`} />
          <figcaption className="muted">
            {rateName}, one line per month people joined ({data.cohorts.length} cohorts; engaged:
            engagement score at least {data.disengagedBelow}).
          </figcaption>
        </figure>
      )}
    </section>
  );
}

function ChurnRates() {
  const churn = useLoad(() => api<Schemas["ChurnOut"]>("/analytics/churn"));
  const config = useMemo((): ChartConfiguration<"line"> | null => {
    const rows = churn.data?.rows;
    if (!rows) return null;
    const months = [...new Set(rows.map((r) => r.month))].sort();
    const segments = [...new Set(rows.map((r) => r.segment))];
    return {
      type: "line",
      data: {
        labels: months,
        datasets: segments.map((s) => {
          const byMonth = new Map(rows.filter((r) => r.segment === s).map((r) => [r.month, r.rate]));
          return {
            label: segmentName(s),
            data: months.map((m) => {
              const r = byMonth.get(m);
              return r === null || r === undefined ? null : r * 100;
            }),
            borderColor: SEGMENT_COLORS[s] ?? "#4a5360",
            backgroundColor: SEGMENT_COLORS[s] ?? "#4a5360",
            pointRadius: 2,
          };
        }),
      },
      options: {
        animation: false,
        scales: { y: { title: { display: true, text: "disengaged in the month (%)" }, suggestedMin: 0 } },
      },
    };
  }, [churn.data]);
  return (
    <section className="card" aria-labelledby="churn-h">
      <h3 id="churn-h">Disengagement by segment</h3>
      <Problem error={churn.error} />
      {churn.data && config && (
        <figure>
          <ChartCanvas config={config} testId="churn-chart"
            label={`Share of engaged people who disengaged or left, by month and segment: ${churn.data.rows
              .map((r) => `${r.month} ${segmentName(r.segment)} ${pct(r.rate)}`)
              .join(", ")}`} />
          <figcaption className="muted">
            Of the people engaged at the start of a month, the share who disengaged (engagement
            below {churn.data.disengagedBelow}) or left by its end.
          </figcaption>
        </figure>
      )}
    </section>
  );
}

function InterventionEffect() {
  const [horizon, setHorizon] = useState(3);
  const effect = useLatest(
    () => api<Schemas["EffectOut"]>(`/analytics/intervention-effect?horizonMonths=${horizon}`),
    [horizon],
  );
  const e = effect.data;
  const config = useMemo((): ChartConfiguration<"bar"> | null => {
    const balance = e?.balance;
    if (!balance) return null;
    return {
      type: "bar",
      data: {
        labels: balance.features,
        datasets: [
          { label: "before matching", data: balance.before, backgroundColor: "#e8710a" },
          { label: "after matching", data: balance.after, backgroundColor: "#1e6fd9" },
        ],
      },
      options: {
        animation: false,
        indexAxis: "y",
        scales: { x: { title: { display: true, text: "standardized mean difference" } } },
      },
    };
  }, [e]);
  return (
    <section className="card wide" aria-labelledby="effect-h">
      <h3 id="effect-h">Effect of interventions</h3>
      <div className="controls">
        <span>
          <label htmlFor="effect-horizon">Months after the intervention opened</label>
          <select id="effect-horizon" value={horizon} onChange={(ev) => setHorizon(Number(ev.target.value))}>
            {HORIZONS.map((h) => (
              <option key={h} value={h}>{h}</option>
            ))}
          </select>
        </span>
      </div>
      <Problem error={readable(effect.error)} />
      {e && !effect.error && (
        <div className="split">
          <div>
            <p data-testid="effect">
              {e.effect === null ? (
                <>Effect: — (not enough matched people to estimate it)</>
              ) : (
                <>
                  Effect after {e.horizonMonths} {e.horizonMonths === 1 ? "month" : "months"}:{" "}
                  <strong className="big">{signed(e.effect, 2)}</strong> FWI points
                  {e.ci95 && e.ci95.length === 2 && (
                    <> (95% interval {e.ci95[0]!.toFixed(2)} to {e.ci95[1]!.toFixed(2)})</>
                  )}
                </>
              )}
            </p>
            <p className="muted">{e.outcome}; {e.estimator}.</p>
            <p data-testid="effect-counts">
              Treated {count(e.treated)}, matched {count(e.matched)}, unmatched {count(e.unmatched)},
              controls {count(e.controls)}
              {e.distinctControls !== null && e.distinctControls !== undefined && <> ({count(e.distinctControls)} distinct)</>}
              {e.treatedMeanChange !== null && e.treatedMeanChange !== undefined && (
                <>; mean change {signed(e.treatedMeanChange, 2)} treated, {signed(e.controlMeanChange ?? 0, 2)} controls</>
              )}
              .
            </p>
            {e.warnings.length > 0 && (
              <ul className="warning" data-testid="effect-warnings">
                {e.warnings.map((w) => (
                  <li key={w}>{w}</li>
                ))}
              </ul>
            )}
          </div>
          {e.balance && config && (
            <div>
              <figure>
                <ChartCanvas config={config} testId="balance-chart"
                  label={`Balance, standardized mean differences before and after matching: ${e.balance.features
                    .map((f, k) => `${f} ${e.balance!.before[k]} to ${e.balance!.after[k]}`)
                    .join(", ")}`} />
              </figure>
              <table data-testid="balance">
                <caption>Balance (standardized mean difference; near 0 is balanced)</caption>
                <thead>
                  <tr>
                    <th scope="col">Feature</th>
                    <th scope="col">Before matching</th>
                    <th scope="col">After matching</th>
                  </tr>
                </thead>
                <tbody>
                  {e.balance.features.map((f, k) => (
                    <tr key={f}>
                      <td>{f}</td>
                      <td>{e.balance!.before[k]?.toFixed(3) ?? "—"}</td>
                      <td>{e.balance!.after[k]?.toFixed(3) ?? "—"}</td>
                    </tr>
                  ))}
                </tbody>
              </table>
            </div>
          )}
        </div>
      )}
    </section>
  );
}

function Experiment() {
  const campaigns = useLoad(() => api<Schemas["CampaignPage"]>("/campaigns?limit=50"));
  const [picked, setPicked] = useState<number | null>(null);
  const [mde, setMde] = useState("0.05");
  const campaignId = picked ?? campaigns.data?.items[0]?.id ?? null;
  const mdeValue = Number(mde);
  // The server names the bounds it takes (a 422 shown as it says); here only "a number".
  const mdeOk = mde.trim() !== "" && Number.isFinite(mdeValue) && mdeValue > 0;
  const result = useLatest(
    () =>
      campaignId !== null && mdeOk
        ? api<Schemas["ExperimentOut"]>(`/campaigns/${campaignId}/experiment?minDetectableEffect=${mdeValue}`)
        : Promise.resolve(null),
    [campaignId, mdeOk, mdeValue],
  );
  const x = result.data;
  const config = useMemo((): ChartConfiguration<"bar"> | null => {
    if (!x) return null;
    return {
      type: "bar",
      data: {
        labels: x.variants.map((v) => `${v.variant}: ${v.title}`),
        datasets: [
          {
            label: "conversion rate (%)",
            data: x.variants.map((v) => (v.rate === null ? null : v.rate * 100)) as number[],
            backgroundColor: ["#1e6fd9", "#0b8043", "#5b3fa8", "#e8710a"],
          },
        ],
      },
      options: {
        animation: false,
        plugins: { legend: { display: false } },
        scales: { y: { title: { display: true, text: "converted (%)" }, suggestedMin: 0 } },
      },
    };
  }, [x]);
  return (
    <section className="card wide" aria-labelledby="experiment-h">
      <h3 id="experiment-h">Campaign experiment</h3>
      <div className="controls">
        <span>
          <label htmlFor="experiment-campaign">Campaign</label>
          <select id="experiment-campaign" value={campaignId ?? ""} onChange={(e) => setPicked(Number(e.target.value))}>
            {(campaigns.data?.items ?? []).map((c) => (
              <option key={c.id} value={c.id}>
                #{c.id} {c.name}
              </option>
            ))}
          </select>
        </span>
        <span>
          <label htmlFor="experiment-mde">Minimum detectable effect (difference in rate, e.g. 0.05)</label>
          <input id="experiment-mde" type="number" step="0.001" value={mde}
            onChange={(e) => setMde(e.target.value)} />
        </span>
      </div>
      <Problem error={campaigns.error ?? (mdeOk ? readable(result.error) : "The minimum detectable effect is a positive number, e.g. 0.05.")} />
      {x && mdeOk && !result.error && (
        <div className="split">
          <div>
            {x.warning && (
              <p className="warning" data-testid="experiment-warning">
                <strong>Not conclusive yet.</strong> {x.warning}
              </p>
            )}
            <table data-testid="experiment-variants">
              <caption>Conversions ({x.conversionEvent} within {x.conversionDays} days) by variant</caption>
              <thead>
                <tr>
                  <th scope="col">Variant</th>
                  <th scope="col">Title</th>
                  <th scope="col">Sent</th>
                  <th scope="col">Converted</th>
                  <th scope="col">Rate</th>
                </tr>
              </thead>
              <tbody>
                {x.variants.map((v) => (
                  <tr key={v.variant} data-testid="experiment-variant">
                    <td>{v.variant}</td>
                    <td>{v.title}</td>
                    <td>{count(v.sent)}</td>
                    <td>{count(v.converted)}</td>
                    <td>{pct(v.rate)}</td>
                  </tr>
                ))}
              </tbody>
            </table>
            <ul className="plain" data-testid="experiment-comparisons">
              {x.comparisons.map((c) => (
                <li key={`${c.variant}-${c.against}`}>
                  Variant {c.variant} against {c.against}: difference{" "}
                  <strong>{c.difference === null ? "—" : `${signed(c.difference * 100, 1)} points`}</strong>
                  {c.ci95 && c.ci95.length === 2 && (
                    <> (95% interval {signed(c.ci95[0]! * 100, 1)} to {signed(c.ci95[1]! * 100, 1)})</>
                  )}
                  , p-value {c.pValue === null ? "—" : c.pValue < 0.001 ? "< 0.001" : c.pValue.toFixed(3)}
                  {c.significant !== null && <>, {c.significant ? "significant" : "not significant"}</>}
                </li>
              ))}
            </ul>
            <p data-testid="experiment-plan">
              Planned: {x.plannedPerVariant.toLocaleString()} people per variant to detect{" "}
              {(x.minDetectableEffect * 100).toFixed(1)} points from a baseline of {pct(x.baselineRate)}{" "}
              (alpha {x.alpha}, power {x.power}) — {x.reached ? "reached" : "not reached yet"}.
            </p>
          </div>
          {config && (
            <figure>
              <ChartCanvas config={config} testId="experiment-chart"
                label={`Conversion rate by variant: ${x.variants.map((v) => `${v.variant} ${pct(v.rate)}`).join(", ")}`} />
            </figure>
          )}
        </div>
      )}
    </section>
  );
}
