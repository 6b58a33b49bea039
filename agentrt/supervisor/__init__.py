"""The supervisor: agent pools, dispatch, restart policy, deadlines, teardown.

The package's rooms, each owning one thing (data flows down this list):

* ``policy``: Erlang/OTP's restart rules as pure functions (no I/O);
* ``events``: :class:`RunEvent` and the stream subscribers read;
* ``ledger``: every call from submission to its one outcome (``settle``);
* ``boot``: what a replica starts with (sandbox plan, cgroups, ``Boot``);
* ``pool``: each agent's replicas: run loop, dispatch, requeue, stop;
* ``tree``: the policy applied: restarts, group restarts, failure, shutdown;
* ``oversight``: approvals and the audit log (human oversight);
* ``requests``: the agents' ``ctx`` requests and isolated tools;
* ``holds``: pause and resume (processes frozen, deadlines standing still);
* ``console``: what ``agentrt ctl`` talks to (control requests, views);
* ``facade``: the :class:`Supervisor` class, the public API.
"""

from agentrt.supervisor.events import RunEvent
from agentrt.supervisor.facade import CallReport, RunLink, Supervisor
from agentrt.supervisor.ledger import RunHost
from agentrt.supervisor.oversight import Approver, AuditEntry, Decision, PendingApproval, Who
from agentrt.supervisor.pool import ReplicaStatus, StandbyStatus

__all__ = [
    "Approver",
    "AuditEntry",
    "CallReport",
    "Decision",
    "PendingApproval",
    "ReplicaStatus",
    "RunEvent",
    "RunHost",
    "RunLink",
    "StandbyStatus",
    "Supervisor",
    "Who",
]
