"""Problems found in the inventory or the manifests, and how they are reported.

Every problem names where it is (a file and line, or an inventory variable), the object and the
field, what is wrong and how to fix it. Validation collects every problem it can before it stops,
so one run shows the user the whole list.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

ERROR = "error"
WARNING = "warning"


@dataclass(frozen=True)
class Problem:
    where: str  # "inventory/lab" or "manifests/web.yaml:12"
    subject: str  # "podnet_service_cidr" or "Service default/web"
    field: str  # "spec.ports[0].port" ("" when the subject itself is the problem)
    message: str  # what is wrong
    fix: str  # what to do about it
    severity: str = ERROR

    def __str__(self) -> str:
        at = f"{self.subject}: {self.field}" if self.field else self.subject
        return f"{self.where}: {at}: {self.message}; fix: {self.fix}"

    def as_dict(self) -> dict[str, str]:
        return {
            "where": self.where,
            "subject": self.subject,
            "field": self.field,
            "message": self.message,
            "fix": self.fix,
            "severity": self.severity,
            "text": str(self),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, str]) -> Problem:
        return cls(data["where"], data["subject"], data["field"], data["message"], data["fix"],
                   data["severity"])


@dataclass
class Problems:
    """A list of problems that callers add to; ``errors`` stop a plan, warnings do not."""

    items: list[Problem] = field(default_factory=list)
    # the same problems as a set: a file of 100,000 one-line documents has as many problems,
    # and a membership test on the list made reporting them quadratic (hours)
    _seen: set[Problem] = field(default_factory=set, init=False, repr=False, compare=False)

    def add(self, problem: Problem) -> None:
        if problem not in self._seen:
            self._seen.add(problem)
            self.items.append(problem)

    def error(self, where: str, subject: str, fld: str, message: str, fix: str) -> None:
        self.add(Problem(where, subject, fld, message, fix, ERROR))

    def warn(self, where: str, subject: str, fld: str, message: str, fix: str) -> None:
        self.add(Problem(where, subject, fld, message, fix, WARNING))

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.items if p.severity == ERROR]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.items if p.severity == WARNING]


class InvalidInput(Exception):
    """Raised with every error found; ``str()`` lists them one per line."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))
