"""Admin actions (``POST /admin/*``, all behind the admin token).

* ``POST /admin/transfer-leadership {"to": ID}``: 200 ``{"leader", "seconds"}`` once ID
  leads; 409 when it did not move in time.
* ``POST /admin/snapshot``: 200 with the snapshot provider's answer (the SnapshotService's
  ``snapshot_now()``: index, size, seconds); 409 on a follower; 501 while no snapshot
  provider is registered on this node (no ``[snapshots] store``; see
  :mod:`hastate.observability.stats`).
* ``POST /admin/members {"op": "add", "member": {"id", "raft", "http", "region"}}`` or
  ``{"op": "remove", "id": ID}``: 200 ``{"commit_index", "members"}`` once the change is
  committed; 409 off the leader (``leader`` names it); 422 when refused (would lose quorum,
  already a member, another change in flight: ``error`` says which); 400 for a bad body;
  504 when it did not commit in time (check ``/status`` before retrying).
"""

from __future__ import annotations

from hastate.consensus.membership import Member, MembershipError
from hastate.errors import MembershipRefused, NotLeaderError, WriteTimeoutError
from hastate.observability import stats as stats_mod
from hastate.server.routes import Handler, Reply, Request, Served


def transfer_leadership(server: Served, request: Request) -> Reply:
    """Move leadership to ``to`` and answer once it leads."""
    target = request.body.get("to")
    if not isinstance(target, str):
        return Reply(400, {"error": "body must be {\"to\": \"<instance id>\"}"})
    seconds = server.manager.trigger_failover(target)
    return Reply(200, {"leader": target, "seconds": round(seconds, 3)})


def snapshot(server: Served, _request: Request) -> Reply:
    """Take and upload a snapshot now (leader only)."""
    trigger = stats_mod.for_node(server.manager.instance_id).snapshot_trigger
    if trigger is None:
        return Reply(501, {"error": "snapshots are not available on this node: no snapshot "
                           "provider is registered (is [snapshots] store set and snapshot "
                           "support wired in this build?); nothing was done"})
    try:
        result = trigger()
    except (RuntimeError, TimeoutError) as exc:   # not leader, upload failed
        return Reply(409, {"error": f"snapshot not taken: {exc}; post to the node holding "
                           "the leader lease (`hastate status`)"})
    return Reply(200, result if isinstance(result, dict) else {"result": result})


def members(server: Served, request: Request) -> Reply:
    """Add or remove one voter through the Raft log."""
    manager = server.manager
    body = request.body
    op = body.get("op")
    try:
        if op == "add":
            index = manager.add_member(Member.from_dict(body.get("member")))
        elif op == "remove" and isinstance(body.get("id"), str):
            index = manager.remove_member(body["id"])
        else:
            raise MembershipError('body must be {"op": "add", "member": {"id", "raft", '
                                  '"http", "region"}} or {"op": "remove", "id": ID}')
    except MembershipError as exc:
        return Reply(400, {"error": str(exc)})
    except NotLeaderError as exc:
        return Reply(409, {"error": str(exc), "leader": exc.leader})
    except MembershipRefused as exc:
        return Reply(422, {"error": str(exc)})
    except WriteTimeoutError as exc:
        return Reply(504, {"error": str(exc)})
    return Reply(200, {"commit_index": index,
                       "members": [m.to_dict() for m in manager.members()]})


ROUTES: dict[tuple[str, str], tuple[Handler, bool]] = {
    ("POST", "/admin/transfer-leadership"): (transfer_leadership, True),
    ("POST", "/admin/snapshot"): (snapshot, True),
    ("POST", "/admin/members"): (members, True),
}
