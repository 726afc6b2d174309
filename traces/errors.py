"""Errors raised by the trace readers."""


class TraceError(ValueError):
    """A trace or statistics file cannot be used; the message says what is wrong and how to fix it."""
