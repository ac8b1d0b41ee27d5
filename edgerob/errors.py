"""The one exception type for errors a user can cause.

The CLI turns an `EdgerobError` into one line on stderr and exit code 2; anything else is a bug
and keeps its traceback.
"""


class EdgerobError(Exception):
    """A problem with the user's input (file, YAML, URL, option), explained in one line."""
