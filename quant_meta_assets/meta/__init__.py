"""Meta-portfolio stages: aggregate sleeve returns, optimize, flatten (pure, no dagster)."""
