"""TreePoints, reward tiers and milestones (SPEC §3, §9 Rewards and Milestones)."""
