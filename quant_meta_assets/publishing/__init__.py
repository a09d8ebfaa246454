"""What consumers read: the published snapshot (one lineage, monotone in time) and the retention
of the run-scoped outputs it names. Pure core: no dagster import."""
