"""agentrt: a process-isolated runtime for parallel AI agents.

The public API is what ``__all__`` lists; everything else is internal.
"""

from agentrt.config import (
    AgentSpec,
    Config,
    Limits,
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
    BudgetExceeded,
    CallCancelled,
    CallError,
    CallTimeout,
    ConfigError,
    LimitExceeded,
    ProtocolViolation,
    RemoteError,
    StartupError,
    SupervisorClosed,
    UnknownAgent,
)
from agentrt.supervisor import CallReport, ReplicaStatus, Supervisor

__version__ = "0.1.0"

__all__ = [
    "AgentCrashed",
    "AgentDied",
    "AgentFailed",
    "AgentSpec",
    "AgentrtError",
    "BudgetExceeded",
    "CallCancelled",
    "CallError",
    "CallReport",
    "CallTimeout",
    "Config",
    "ConfigError",
    "Context",
    "LimitExceeded",
    "Limits",
    "Op",
    "ProtocolViolation",
    "RemoteError",
    "ReplicaStatus",
    "RunSpec",
    "StartupError",
    "Supervisor",
    "SupervisorClosed",
    "SupervisorSpec",
    "SyncContext",
    "TaskSpec",
    "ToolSpec",
    "UnknownAgent",
    "__version__",
    "load_config",
    "parse_config",
    "spawn_call",
    "tool",
    "tool_call",
]
