"""Archive whole trees: planner, Dask executor, SQLite manifest, ``medzip batch`` CLI."""
