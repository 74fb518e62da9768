"""Risk predictions (SPEC §10): crisis and disengagement within 30 days, calibrated and
explained. ``features`` and ``training`` are pure; the rest reads and writes the database."""
