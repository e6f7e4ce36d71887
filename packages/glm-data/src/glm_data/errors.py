"""The one exception glm-data raises for problems a user can fix."""


class DataError(ValueError):
    """Bad input, settings or files: the message says what was wrong, with the value or path, and what to do."""
