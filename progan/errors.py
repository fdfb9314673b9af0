"""The one exception users see: a one-line message the CLI prints without a traceback."""


class ProganError(Exception):
    """An error caused by the user's input (a file, an option); the message says what to do."""
