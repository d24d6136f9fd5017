"""What ``conveyor automation check`` says about leases (kept out of the ``lease`` package, whose
S3 backend needs the optional boto3): which lease elects each workflow's
master, and a warning when a ``file`` lease sits on a file system other machines cannot see
(each machine would then elect its own master).

>>> from conveyor.automation.settings import LeaderElection
>>> describe(LeaderElection(), "migrate")
'redis lease conveyor:lease:migrate in the Redis every node shares (leaderElection.path is null)'
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from conveyor.automation.settings import AutomationSettings, LeaderElection

#: File system types whose files other machines see (``/proc/mounts`` names).
SHARED_FS = frozenset(
    {
        "nfs",
        "nfs4",
        "cifs",
        "smb3",
        "smbfs",
        "ceph",
        "cephfs",
        "glusterfs",
        "fuse.glusterfs",
        "fuse.cephfs",
        "lustre",
        "gpfs",
        "beegfs",
        "ocfs2",
        "gfs2",
        "afs",
        "fuse.s3fs",
        "fuse.efs",
    }
)


@dataclass(frozen=True)
class Mount:
    point: str
    fstype: str


def mount_of(path: str, mounts_file: str = "/proc/mounts") -> Mount | None:
    """The mount holding ``path`` (the longest mount point that contains it), or ``None``
    when the mount table cannot be read."""
    target = os.path.realpath(path)
    try:
        with open(mounts_file, encoding="utf-8") as f:
            rows = [line.split() for line in f]
    except OSError:
        return None
    best: Mount | None = None
    for row in rows:
        if len(row) < 3:
            continue
        point = row[1].replace("\\040", " ")
        inside = target == point or target.startswith(point.rstrip("/") + "/")
        if inside and (best is None or len(point) > len(best.point)):
            best = Mount(point, row[2])
    return best


def describe(election: LeaderElection, workflow: str) -> str:
    """One line: the lease a workflow's ``leaderElection`` gives it."""
    if election.type == "aws-s3":
        return f"aws-s3 lease {election.lease_path(workflow)} ({election.auth_endpoint})"
    if election.type == "file" and election.path is not None:
        return f"file lease {election.lease_path(workflow)}"
    name = election.lease_path(workflow) or workflow
    why = " (leaderElection.path is null)" if election.path is None else ""
    return f"redis lease conveyor:lease:{name} in the Redis every node shares{why}"


def explain_leases(
    settings: AutomationSettings, mounts_file: str = "/proc/mounts"
) -> tuple[list[str], list[str]]:
    """Per workflow, the line describing its lease; and the warnings about file leases that
    other machines may not see."""
    lines: list[str] = []
    warnings: list[str] = []
    for workflow in settings.workflows:
        prepare = workflow.steps.prepare
        election = prepare.leader_election if prepare is not None else LeaderElection()
        lines.append(f"lease: {workflow.name}: {describe(election, workflow.name)}")
        if election.type != "file" or election.path is None:
            continue
        path = election.lease_path(workflow.name) or election.path
        directory = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(directory):
            warnings.append(
                f"{workflow.name}: lease directory {directory} does not exist here; nodes "
                "cannot elect a master until the shared storage is mounted there"
            )
            continue
        mount = mount_of(directory, mounts_file)
        if mount is not None and mount.fstype not in SHARED_FS:
            warnings.append(
                f"{workflow.name}: file lease {path} is on a local file system ({mount.fstype} "
                f"mounted at {mount.point}): nodes on other machines cannot see it and each "
                "would be master; put it on shared storage (NFS) or set leaderElection.path "
                "to null (the Redis lease)"
            )
    return lines, warnings
