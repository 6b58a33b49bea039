"""Sandbox profiles enforced: what this machine offers, the plan, cgroups, the child's side.

* :mod:`~agentrt.sandbox.probe`: what the machine can enforce (:func:`probe`);
* :mod:`~agentrt.sandbox.planning`: a profile merged with an agent's limits, each
  setting decided (:func:`plan`, :func:`explain`);
* :mod:`~agentrt.sandbox.cgroups`: one group per replica (:class:`Cgroups`);
* :mod:`~agentrt.sandbox.confine`: the child's side, before user code
  (:func:`enter_cgroups`, :func:`confine`).

The planning names (:func:`plan`, :func:`explain`, :class:`Plan`) are
imported on first use (PEP 562): the supervisor's side, they bring in the
configuration loader, which a replica never needs.  A zygote that imports
them boots about 25 ms later, and every ``spawn`` replica with it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from agentrt.sandbox.cgroups import Cgroups
from agentrt.sandbox.confine import confine, enter_cgroups
from agentrt.sandbox.probe import SandboxError, cgroup_probe, landlock_abi, probe

if TYPE_CHECKING:
    from agentrt.sandbox.planning import Plan, explain, plan

#: public name -> the submodule that defines it
_HOME = {
    "Plan": "agentrt.sandbox.planning",
    "explain": "agentrt.sandbox.planning",
    "plan": "agentrt.sandbox.planning",
}


def __getattr__(name: str) -> Any:
    home = _HOME.get(name)
    if home is None:
        raise AttributeError(f"module 'agentrt.sandbox' has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


__all__ = [
    "Cgroups",
    "Plan",
    "SandboxError",
    "cgroup_probe",
    "confine",
    "enter_cgroups",
    "explain",
    "landlock_abi",
    "plan",
    "probe",
]
