"""The one exception type users see: a bad input, reported as one line."""


class EarlyBertError(ValueError):
    """Bad input: the message names the problem and the fix; the CLI prints it and exits 2."""
