"""Sleeves: the registry of strategies, the strategies themselves, the engine that turns target
weights into daily returns, the sleeve states (missing / failed / stale / current) and the store
the SDK streams sleeves into. Pure core: no dagster import, no ray import."""
