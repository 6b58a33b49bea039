"""agentrt: a process-isolated runtime for parallel AI agents.

The public API is what ``__all__`` lists; everything else is internal.
"""

from agentrt.config import (
    AgentSpec,
    Config,
    Limits,
    SupervisorSpec,
    TaskSpec,
    load_config,
    parse_config,
)
from agentrt.errors import (
    AgentCrashed,
    AgentDied,
    AgentFailed,
    AgentrtError,
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
from agentrt.supervisor import ReplicaStatus, Supervisor

__version__ = "0.1.0"

__all__ = [
    "AgentCrashed",
    "AgentDied",
    "AgentFailed",
    "AgentSpec",
    "AgentrtError",
    "CallCancelled",
    "CallError",
    "CallTimeout",
    "Config",
    "ConfigError",
    "LimitExceeded",
    "Limits",
    "ProtocolViolation",
    "RemoteError",
    "ReplicaStatus",
    "StartupError",
    "Supervisor",
    "SupervisorClosed",
    "SupervisorSpec",
    "TaskSpec",
    "UnknownAgent",
    "__version__",
    "load_config",
    "parse_config",
]
