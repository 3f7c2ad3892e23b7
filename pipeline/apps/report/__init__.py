"""The report over a run's Parquet outputs (``run_pipeline.py report``): read.py (streaming,
column-projected reads, flat or hive layout), load.py (one pass over metrics/), stats.py,
tables.py (the numbers), failures.py (failed clips in their latest state), compare.py (two
runs), colours.py (one colour per method), plots.py, pictures.py, truth.py (the manifest's
ground-truth boxes), render.py (Markdown, CSV, HTML tables), page.py (index.html), cli.py
(options and the order of work). read.py checks every file it opens and names the damaged
ones."""
