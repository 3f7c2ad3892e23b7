"""The concepts job (Video-TCAV over a dataset): ``python run_pipeline.py concepts ...``.

options.py parses the command line into a :class:`~pipeline.concepts.options.ConceptOptions`;
listing.py lists concept, random and input clips; job.py runs the two Beam pipelines (features,
then scores) and writes ``OUT/concepts/``. The maths is :mod:`transforms.tcav`.
"""
