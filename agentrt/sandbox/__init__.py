"""Sandbox profiles enforced: what this machine offers, the plan, cgroups, the child's side.

* :mod:`~agentrt.sandbox.probe`: what the machine can enforce (:func:`probe`);
* :mod:`~agentrt.sandbox.plan`: a profile merged with an agent's limits, each
  setting decided (:func:`plan`, :func:`explain`);
* :mod:`~agentrt.sandbox.cgroups`: one group per replica (:class:`Cgroups`);
* :mod:`~agentrt.sandbox.confine`: the child's side, before user code
  (:func:`enter_cgroups`, :func:`confine`).
"""

from agentrt.sandbox.cgroups import Cgroups
from agentrt.sandbox.confine import confine, enter_cgroups
from agentrt.sandbox.plan import Plan, explain, plan
from agentrt.sandbox.probe import SandboxError, landlock_abi, probe

__all__ = [
    "Cgroups",
    "Plan",
    "SandboxError",
    "confine",
    "enter_cgroups",
    "explain",
    "landlock_abi",
    "plan",
    "probe",
]
