"""Dagster definitions: thin drivers over the pure core (one implementation per stage)."""
