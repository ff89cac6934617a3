"""The one error type for bad input: it names the file, line, step and field at fault."""

from __future__ import annotations


class ScenarioError(Exception):
    """A scenario (or observation) file that does not follow the contract.

    :param file: path of the file, or ``<string>``
    :param message: what was expected
    :param line: 1-based line in the file, when known
    :param step: index of the step at fault, when the fault is inside a step
    :param field: name of the field at fault
    """

    def __init__(
        self,
        file: str,
        message: str,
        *,
        line: int | None = None,
        step: int | None = None,
        field: str | None = None,
    ) -> None:
        self.file = file
        self.message = message
        self.line = line
        self.step = step
        self.field = field
        super().__init__(str(self))

    def __str__(self) -> str:
        where = self.file
        if self.line is not None:
            where += f":{self.line}"
        parts = [where]
        if self.step is not None:
            parts.append(f"step {self.step}")
        if self.field is not None:
            parts.append(f"field '{self.field}'")
        return ": ".join(parts) + f": {self.message}"
