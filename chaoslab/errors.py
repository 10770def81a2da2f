"""One error root: every user-facing error carries an exit code and a hint."""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0
    EXPECTATIONS_FAILED = 1  # an expectation failed, a phase is invalid, the generator saturated
    BAD_INPUT = 2  # the scenario, an option or a report is bad: nothing was started or written
    ENVIRONMENT = 3  # a tool, the kernel or a target failed, or a target is held by another run
    INTERNAL = 4  # an unexpected exception: a bug in chaoslab (its traceback is saved to a file)
    ABORTED = 5  # a stop condition tripped: faults reverted, load stopped, the report says why
    SWITCH = 6  # the dead man's switch undid the faults (chaoslab stalled, or a fault overran)
    INTERRUPTED = 130


class ChaoslabError(Exception):
    """An error meant for the user: message, hint and the exit code to leave with."""

    exit_code: ExitCode = ExitCode.ENVIRONMENT

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def render(self) -> str:
        return f"{self.message}\n  hint: {self.hint}" if self.hint else self.message


class PreflightError(ChaoslabError):
    """A tool, privilege or kernel feature is missing; nothing was applied."""


class TargetError(ChaoslabError):
    """A target failed to start, became unhealthy or could not be torn down."""


class CommandError(ChaoslabError):
    """A system command (ip, tc, iptables, openssl...) failed: the command, its stderr, a hint."""


class LoadError(ChaoslabError):
    """The load cannot start: a gRPC request does not fit the API its protos or the server's
    reflection describe, or they cannot be read; nothing was sent."""


class FaultError(ChaoslabError):
    """A fault could not be applied or reverted."""


class ReportError(ChaoslabError):
    """A saved report (or a comparison's input) cannot be read; nothing was written."""

    exit_code = ExitCode.BAD_INPUT


class UsageError(ChaoslabError):
    """A command-line option has a bad value; nothing was started."""

    exit_code = ExitCode.BAD_INPUT


class Interrupted(ChaoslabError):
    exit_code = ExitCode.INTERRUPTED
