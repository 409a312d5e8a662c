"""Which model names telemetry's metrics carry as labels, and which it counts as `other`.

A model label is the caller's text, and each one kept is a series of every counter and histogram
for the life of the process, so only so many are kept. Were they kept first come, a caller naming
junk models (ones the router refuses with 404) would take every slot, and the real models named
afterwards would count as `other` from then on. So a name earns a lasting slot (`MAX_MODELS` of
them) only once a request for it got a 2xx answer or a hit (`admit`); until then it is labelled by
name only while few unproven names are (`MAX_UNPROVEN_MODELS`), and `other` past that.
"""

from __future__ import annotations

MAX_MODELS = 200
"""Models that got an answer, labelled by name; further ones are `other`."""
MAX_UNPROVEN_MODELS = 50
"""Models no answer has proven yet, labelled by name (the first ones named); further ones are `other`
until they get an answer."""


class ModelLabels:
    """The model label sets of one Telemetry: at most `MAX_MODELS + MAX_UNPROVEN_MODELS` names."""

    __slots__ = ("admitted", "named", "unproven")

    def __init__(self) -> None:
        self.named: set[str] = set()
        """Names labelled as themselves: the admitted ones and the unproven ones given a slot."""
        self.admitted: set[str] = set()
        self.unproven = 0

    def label(self, model: str | None) -> str:
        """The model as metrics name it: itself, `other`, or `unknown` when the request names none."""
        if not model:
            return "unknown"
        if model in self.named:
            return model
        if self.unproven >= MAX_UNPROVEN_MODELS:
            return "other"
        self.named.add(model)
        self.unproven += 1
        return model

    def admit(self, model: str | None) -> bool:
        """`model` got an answer: label it by name from now on (while admitted slots last). True when a
        name that was labelled `other` is labelled by name from now on (labels worked out earlier are stale)."""
        if not model or model in self.admitted or len(self.admitted) >= MAX_MODELS:
            return False
        self.admitted.add(model)
        if model in self.named:
            self.unproven -= 1  # its unproven slot goes to the next name
            return False
        self.named.add(model)
        return True
