"""The vidwatch exception tree. Every error says what is wrong and what to do.

    VidwatchError
    ├── ConfigError          a deployment YAML that does not validate (carries path + line)
    ├── ModelPackageError    a model package folder that is missing, corrupt or inconsistent
    ├── EngineError          an inference engine that cannot load or run a graph
    ├── SourceError          a camera source that cannot be opened or read
    └── WireError            a ZeroMQ message that does not decode (counted and dropped)

Foreign exceptions (cv2, zmq, onnxruntime, pydantic) are translated at the module that talks to
the library; the supervisor's restart loop is the only place that catches broadly.
"""

from __future__ import annotations


class VidwatchError(Exception):
    """Root of all errors raised on purpose by vidwatch."""


class ConfigError(VidwatchError):
    """The configuration is invalid; ``problems`` lists each one with its YAML path."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"{source}: {len(problems)} problem(s) in the configuration:\n{lines}")


class ModelPackageError(VidwatchError):
    """A model package is unusable; the message names the folder and the file."""


class EngineError(VidwatchError):
    """An engine could not load or run a graph (missing provider, bad graph, wrong input)."""


class SourceError(VidwatchError):
    """A camera source could not be opened or stopped delivering frames."""


class WireError(VidwatchError):
    """A message on a vidwatch socket does not follow the wire protocol."""
