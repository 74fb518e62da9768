import { useState } from "react";
import { api, post, trpc, type Schemas } from "../api";
import { Problem, useLoad } from "../App";

type Profile = Schemas["WellnessProfile"];
type Tier = Schemas["MyTier"];
type Recommendation = Schemas["RecommendationOut"];
type Survey = Schemas["SurveyForm"];
type Preferences = Schemas["Preferences"];

export function EmployeePage({ me }: { me: Schemas["Me"] }) {
  const profile = useLoad(() => api<Profile>("/me/profile"));
  const tier = useLoad(() => trpc.query("rewards.getMyTier") as Promise<Tier>);
  const recs = useLoad(() => api<Recommendation[]>(`/employees/${me.id}/recommendations?limit=5`));
  const refresh = () => {
    profile.reload();
    tier.reload();
    recs.reload();
  };
  return (
    <main data-page="employee">
      <section className="card" aria-labelledby="wellness-h">
        <h2 id="wellness-h">Your financial wellness</h2>
        <Problem error={profile.error} />
        {profile.data && (
          <div data-testid="profile">
            <div className="big" data-testid="wellness-score">
              {profile.data.wellnessScore}
            </div>
            <p>
              FWI <strong data-testid="fwi">{profile.data.fwiScore}</strong> · engagement{" "}
              {profile.data.engagementScore}
            </p>
            <p>
              Segment: <strong data-testid="segment">{profile.data.segment}</strong> (
              {profile.data.interventionType})
            </p>
            <p className="muted">Why: {profile.data.reasons.join(", ") || "—"}</p>
          </div>
        )}
      </section>
      <section className="card" aria-labelledby="tier-h">
        <h2 id="tier-h">TreePoints</h2>
        <Problem error={tier.error} />
        {tier.data && (
          <div data-testid="tier">
            <div className="big">{tier.data.tier}</div>
            <p data-testid="points">{tier.data.points.toLocaleString()} points</p>
            {tier.data.nextTier && tier.data.pointsToNext !== null && (
              <>
                <label htmlFor="tier-progress">
                  {tier.data.pointsToNext.toLocaleString()} points to {tier.data.nextTier}
                </label>
                <progress
                  id="tier-progress"
                  max={tier.data.points + tier.data.pointsToNext}
                  value={tier.data.points}
                />
              </>
            )}
            <p className="muted">Benefits: {tier.data.benefits.join(", ")}</p>
          </div>
        )}
      </section>
      <section className="card" aria-labelledby="recs-h">
        <h2 id="recs-h">Recommended for you</h2>
        <Problem error={recs.error} />
        <ul className="plain" data-testid="recommendations">
          {(recs.data ?? []).map((r) => (
            <li key={r.id} data-testid="recommendation" data-id={r.id}>
              <strong>{r.title}</strong>
              <div className="muted">{r.description}</div>
              <button onClick={() => post(`/me/recommendations/${r.id}/click`)}>Open</button>{" "}
              <button onClick={() => post(`/me/recommendations/${r.id}/complete`).then(refresh)}>
                Done
              </button>{" "}
              <button onClick={() => post(`/me/recommendations/${r.id}/dismiss`).then(refresh)}>
                Not for me
              </button>
            </li>
          ))}
        </ul>
      </section>
      <SurveyCard me={me} onDone={refresh} />
      <PreferencesCard />
    </main>
  );
}

function SurveyCard({ me, onDone }: { me: Schemas["Me"]; onDone: () => void }) {
  const form = useLoad(() => api<Survey>("/survey"));
  const [answers, setAnswers] = useState<Record<number, string>>({});
  const [ageBand, setAgeBand] = useState("18-61");
  const [result, setResult] = useState<string | null>(null);
  const [error, setError] = useState<string | null>(null);
  const submit = async (event: React.FormEvent) => {
    event.preventDefault();
    const items = form.data?.items ?? [];
    try {
      const done = await post<Schemas["SurveyOut"]>(`/employees/${me.id}/survey`, {
        answers: items.map((i) => answers[i.number]),
        ageBand,
        mode: "self",
      });
      setResult(`Your score: ${done.scaleScore}`);
      setError(null);
      onDone();
    } catch (e) {
      setError(e instanceof Error ? e.message : String(e));
    }
  };
  return (
    <section className="card" aria-labelledby="survey-h">
      <h2 id="survey-h">Financial well-being survey</h2>
      <form onSubmit={submit} data-testid="survey">
        {(form.data?.items ?? []).map((item) => (
          <fieldset key={item.number}>
            <legend>
              {item.number}. {item.text}
            </legend>
            {item.choices.map((choice) => (
              <label key={choice} style={{ display: "inline-block", marginRight: "0.6rem" }}>
                <input
                  type="radio"
                  name={`q${item.number}`}
                  value={choice}
                  style={{ width: "auto" }}
                  checked={answers[item.number] === choice}
                  onChange={() => setAnswers({ ...answers, [item.number]: choice })}
                />{" "}
                {choice.replace(/_/g, " ")}
              </label>
            ))}
          </fieldset>
        ))}
        <label htmlFor="age-band">Age</label>
        <select id="age-band" value={ageBand} onChange={(e) => setAgeBand(e.target.value)}>
          {(form.data?.ageBands ?? []).map((b) => (
            <option key={b}>{b}</option>
          ))}
        </select>
        <p>
          <button className="primary" type="submit">
            Submit survey
          </button>
        </p>
        {result && <p role="status">{result}</p>}
        <Problem error={error ?? form.error} />
      </form>
    </section>
  );
}

function PreferencesCard() {
  const prefs = useLoad(() => api<Preferences>("/notifications/preferences"));
  const toggle = async (key: "enableTierUpgrades" | "enableMilestones" | "enableRecommendations") => {
    if (!prefs.data) return;
    await api<Preferences>("/notifications/preferences", {
      method: "PUT",
      body: JSON.stringify({ [key]: !prefs.data[key] }),
    });
    prefs.reload();
  };
  const labels = {
    enableTierUpgrades: "Tier upgrades",
    enableMilestones: "Milestones",
    enableRecommendations: "Recommendations",
  } as const;
  return (
    <section className="card" aria-labelledby="prefs-h">
      <h2 id="prefs-h">Notification preferences</h2>
      <Problem error={prefs.error} />
      {prefs.data &&
        (Object.keys(labels) as (keyof typeof labels)[]).map((key) => (
          <label key={key}>
            <input
              type="checkbox"
              style={{ width: "auto" }}
              checked={Boolean(prefs.data?.[key])}
              onChange={() => toggle(key)}
            />{" "}
            {labels[key]}
          </label>
        ))}
      <p className="muted">Compliance alerts and crisis support cannot be turned off.</p>
    </section>
  );
}
