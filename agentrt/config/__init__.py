"""Configuration: TOML to typed specs, validated, with errors that name the key.

Every struct forbids unknown fields, so a typo fails at load time with the
key's dotted path (``agents.echo.limits.memry: unknown key; did you mean
'memory'?``).  Durations are ``float`` seconds and sizes ``int`` bytes once a
spec is built: a config may write ``"500ms"``, ``"30s"``, ``"2m"`` or
``"256MiB"``, which the decoder turns into numbers once (see
:class:`Seconds`, :class:`Bytes`); nothing downstream parses or casts them.

Rooms: ``units`` (durations and sizes), ``specs`` (the structs), ``decode``
(mappings to specs, key paths), ``profiles`` (sandbox profiles by name),
``loader`` (files, whole documents, entries).
"""

from agentrt.config.decode import convert_spec
from agentrt.config.loader import check_entries, load_config, parse_config, read_toml
from agentrt.config.profiles import SHIPPED_SANDBOXES, load_sandbox, sandbox_names
from agentrt.config.specs import (
    AgentSpec,
    Approval,
    ApprovalRule,
    ApprovalsSpec,
    Config,
    FilesystemSpec,
    Limits,
    ModelSpec,
    OnAgentFailure,
    OnError,
    RestartType,
    RunSpec,
    SandboxLimits,
    SandboxProfile,
    StartMethod,
    Strategy,
    SupervisorSpec,
    TaskSpec,
    ToolSpec,
)
from agentrt.config.units import (
    BRUTAL_KILL,
    INFINITY,
    MAX_ARGS_DEPTH,
    MAX_BYTES,
    MAX_FRAME,
    MAX_SECONDS,
    MIN_FRAME,
    NAME_RE,
    Bytes,
    Grace,
    Seconds,
    parse_duration,
    parse_grace,
    parse_size,
)

__all__ = [
    "BRUTAL_KILL",
    "INFINITY",
    "MAX_ARGS_DEPTH",
    "MAX_BYTES",
    "MAX_FRAME",
    "MAX_SECONDS",
    "MIN_FRAME",
    "NAME_RE",
    "SHIPPED_SANDBOXES",
    "AgentSpec",
    "Approval",
    "ApprovalRule",
    "ApprovalsSpec",
    "Bytes",
    "Config",
    "FilesystemSpec",
    "Grace",
    "Limits",
    "ModelSpec",
    "OnAgentFailure",
    "OnError",
    "RestartType",
    "RunSpec",
    "SandboxLimits",
    "SandboxProfile",
    "Seconds",
    "StartMethod",
    "Strategy",
    "SupervisorSpec",
    "TaskSpec",
    "ToolSpec",
    "check_entries",
    "convert_spec",
    "load_config",
    "load_sandbox",
    "parse_config",
    "parse_duration",
    "parse_grace",
    "parse_size",
    "read_toml",
    "sandbox_names",
]
