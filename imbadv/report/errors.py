"""Report, errors: a sweep that cannot be reported (its own module, so every report module can raise it)."""


class ReportError(Exception):
    """A sweep that cannot be reported; the message names the path or option."""
