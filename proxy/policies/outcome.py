"""What screening decided for one call: kept on the call for the answer and the usage event."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(slots=True)
class Screening:
    policy_id: str
    action: str  # the strongest action taken; "allow" when nothing was found
    counts: dict[str, int] = field(default_factory=dict)  # hits by entity type, never values
    warned: tuple[str, ...] = ()  # entity types found under allow_but_warn
    # Placeholder -> the value it stands for, to put back into the answer; only in this
    # request's memory, and never for a secret.
    restore: dict[str, str] = field(default_factory=dict)
    # For a key that logs its requests, when the call is blocked or warned about (its body goes
    # on, or is kept, with values in it): the body with every value found masked, to store.
    logged_request: bytes | None = None

    def __repr__(self) -> str:  # never the values, whoever prints the object
        return f"Screening({self.policy_id!r}, {self.action!r}, {self.counts!r})"
