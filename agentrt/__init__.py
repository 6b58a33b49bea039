"""agentrt: a process-isolated runtime for parallel AI agents.

The public API is what ``__all__`` lists; everything else is internal.
Names are imported on first use (PEP 562), so that a replica's process,
which imports ``agentrt.worker`` only, does not carry the supervisor, the
configuration loader or the console renderers in its memory.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from agentrt.config import (
        AgentSpec,
        ApprovalRule,
        ApprovalsSpec,
        Config,
        Limits,
        ModelSpec,
        RunSpec,
        SupervisorSpec,
        TaskSpec,
        ToolSpec,
        load_config,
        parse_config,
    )
    from agentrt.context import Context, Op, SyncContext, spawn_call, tool, tool_call
    from agentrt.errors import (
        AgentCrashed,
        AgentDied,
        AgentFailed,
        AgentrtError,
        ApprovalDenied,
        BudgetExceeded,
        CallCancelled,
        CallError,
        CallTimeout,
        ConfigError,
        ControlError,
        EncodeError,
        LimitExceeded,
        MailboxFull,
        ProtocolViolation,
        RemoteError,
        StartupError,
        SupervisorClosed,
        UnknownAgent,
        UnknownTool,
    )
    from agentrt.graph import Graph
    from agentrt.scheduler import Run, RunResult, TaskResult
    from agentrt.supervisor import (
        AuditEntry,
        CallReport,
        Decision,
        PendingApproval,
        ReplicaStatus,
        StandbyStatus,
        Supervisor,
        Who,
    )

#: public name -> the module that defines it
_HOME = {
    "AgentSpec": "agentrt.config",
    "ApprovalRule": "agentrt.config",
    "ApprovalsSpec": "agentrt.config",
    "Config": "agentrt.config",
    "Limits": "agentrt.config",
    "RunSpec": "agentrt.config",
    "SupervisorSpec": "agentrt.config",
    "TaskSpec": "agentrt.config",
    "ModelSpec": "agentrt.config",
    "ToolSpec": "agentrt.config",
    "load_config": "agentrt.config",
    "parse_config": "agentrt.config",
    "Context": "agentrt.context",
    "Op": "agentrt.context",
    "SyncContext": "agentrt.context",
    "spawn_call": "agentrt.context",
    "tool": "agentrt.context",
    "tool_call": "agentrt.context",
    "AgentCrashed": "agentrt.errors",
    "ApprovalDenied": "agentrt.errors",
    "ControlError": "agentrt.errors",
    "AgentDied": "agentrt.errors",
    "AgentFailed": "agentrt.errors",
    "AgentrtError": "agentrt.errors",
    "BudgetExceeded": "agentrt.errors",
    "CallCancelled": "agentrt.errors",
    "CallError": "agentrt.errors",
    "CallTimeout": "agentrt.errors",
    "ConfigError": "agentrt.errors",
    "EncodeError": "agentrt.errors",
    "LimitExceeded": "agentrt.errors",
    "MailboxFull": "agentrt.errors",
    "ProtocolViolation": "agentrt.errors",
    "RemoteError": "agentrt.errors",
    "StartupError": "agentrt.errors",
    "SupervisorClosed": "agentrt.errors",
    "UnknownAgent": "agentrt.errors",
    "UnknownTool": "agentrt.errors",
    "Graph": "agentrt.graph",
    "Run": "agentrt.scheduler",
    "RunResult": "agentrt.scheduler",
    "TaskResult": "agentrt.scheduler",
    "AuditEntry": "agentrt.supervisor",
    "CallReport": "agentrt.supervisor",
    "Decision": "agentrt.supervisor",
    "PendingApproval": "agentrt.supervisor",
    "Who": "agentrt.supervisor",
    "ReplicaStatus": "agentrt.supervisor",
    "StandbyStatus": "agentrt.supervisor",
    "Supervisor": "agentrt.supervisor",
}


def __getattr__(name: str) -> Any:
    home = _HOME.get(name)
    if home is None:
        raise AttributeError(f"module 'agentrt' has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


__version__ = "0.1.0"

__all__ = [
    "AgentCrashed",
    "AgentDied",
    "AgentFailed",
    "AgentSpec",
    "AgentrtError",
    "ApprovalDenied",
    "ApprovalRule",
    "ApprovalsSpec",
    "AuditEntry",
    "BudgetExceeded",
    "CallCancelled",
    "CallError",
    "CallReport",
    "CallTimeout",
    "Config",
    "ConfigError",
    "Context",
    "ControlError",
    "Decision",
    "EncodeError",
    "Graph",
    "LimitExceeded",
    "Limits",
    "MailboxFull",
    "ModelSpec",
    "Op",
    "PendingApproval",
    "ProtocolViolation",
    "RemoteError",
    "ReplicaStatus",
    "Run",
    "RunResult",
    "RunSpec",
    "StandbyStatus",
    "StartupError",
    "Supervisor",
    "SupervisorClosed",
    "SupervisorSpec",
    "SyncContext",
    "TaskResult",
    "TaskSpec",
    "ToolSpec",
    "UnknownAgent",
    "UnknownTool",
    "Who",
    "__version__",
    "load_config",
    "parse_config",
    "spawn_call",
    "tool",
    "tool_call",
]
