"""Campaigns (SPEC §6.3, §9 Campaigns): frozen targets, paced sending, analytics by segment."""
