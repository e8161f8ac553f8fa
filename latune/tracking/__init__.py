"""Everything MLflow: trial records, the sweep tracker, the front view, sync from Tune's files,
the Tune callback and read-back queries."""
