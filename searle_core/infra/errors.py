"""Bad inputs as one-line errors naming the file, field or value, found before any work starts (the CLI
prints an :class:`InputError` as ``searle CMD: error: ...``)."""


class InputError(ValueError):
    """A file, field or value the user gave is unusable; the message names it."""


def first_line(text: object, limit: int = 160) -> str:
    """The first line of ``text``, cut to ``limit`` characters (library errors can run for pages)."""
    line = str(text).strip().splitlines()[0] if str(text).strip() else ""
    return line if len(line) <= limit else line[: limit - 3] + "..."
