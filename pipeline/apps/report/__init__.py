"""The report over a run's Parquet outputs (``run_pipeline.py report``): read.py (streaming,
column-projected reads, flat or hive layout), load.py (one pass over metrics/), stats.py,
tables.py (the numbers), compare.py (two runs), plots.py, pictures.py, render.py (Markdown,
CSV, HTML tables), page.py (index.html), cli.py (options and the order of work)."""
