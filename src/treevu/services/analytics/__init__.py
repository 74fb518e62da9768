"""History and analytics (SPEC §10): monthly snapshots, transitions, cohorts, churn, the effect
of interventions and campaign experiments. ``cube`` and ``effect`` are pure numpy; ``store``
reads and writes the database; ``ops`` are the operations of both transports."""
