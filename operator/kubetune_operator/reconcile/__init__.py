"""Decisions: what should exist and what the status says, given the spec and the observed state."""
