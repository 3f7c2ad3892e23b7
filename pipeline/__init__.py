"""The job's wiring (and, in ``pipeline.apps``, the applications built on it)."""

import transforms  # noqa: F401  (drops Beam's import-time noise before Beam is imported)
