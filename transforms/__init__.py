"""The pipeline's stages: pure maths at the top of each module, a thin Beam wrapper below."""

import logging


class _QuietBeamImport(logging.Filter):
    """Beam's import warns that optional GCP client libraries are missing ("apitools not
    found"): noise for every vidxai user, so it is dropped before Beam is imported."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "apitools not found" not in record.getMessage()


if not any(isinstance(f, _QuietBeamImport) for f in logging.getLogger().filters):
    logging.getLogger().addFilter(_QuietBeamImport())
