"""The project's error for bad input: a value from an agent or a file that is not valid.

``require(cond, message)`` raises ``InvalidInput(message)`` when ``cond`` is false. Unlike
``assert`` it survives ``python -O``, so a check on a tool argument (a position, a layer name, a
component, a regime, ``k``) still reaches the agent as a one-line tool error naming what is valid.
``assert`` stays for internal invariants only (a shape the code itself produced).
"""


class InvalidInput(ValueError):
    """A value from outside (a tool argument, a run file) is not valid; the message says what is."""


def require(cond: object, message: str) -> None:
    """Raise ``InvalidInput(message)`` unless ``cond`` is truthy; ``message`` names what is
    valid."""
    if not cond:
        raise InvalidInput(message)
