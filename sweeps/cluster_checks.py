"""Checks that a sweep's storage location suits the cluster it runs on.

On a multi-node Ray cluster every trial may land on another machine, and a new head node must
find everything after the old one is lost, so results and checkpoints must live on storage that
every node sees: object storage (``s3://``, ``gs://``, ``abfs://`` ...) or a shared filesystem
(NFS, Lustre, GPFS ...). A plain local path works only on a single node.

The functions here take everything they judge as arguments (the environment and the mount table
are read only when the caller does not pass them), so they are cheap to call before a sweep
starts and easy to test.
"""

from __future__ import annotations

import os
import posixpath

from sage_core.defs.errors import ConfigError

__all__ = [
    "SHARED_SCHEMES",
    "SHARED_FSTYPES",
    "SHARED_STORAGE_ENV",
    "check_shared_storage",
    "storage_scheme",
    "mount_fstype",
]

#: URI schemes of storage that every node of a cluster reaches (pyarrow/fsspec filesystems).
SHARED_SCHEMES: frozenset[str] = frozenset(
    {"s3", "s3a", "gs", "gcs", "abfs", "abfss", "az", "hdfs"}
)

#: Filesystem types (as in /proc/mounts) that are shared between machines.
SHARED_FSTYPES: frozenset[str] = frozenset(
    {
        "nfs", "nfs4", "lustre", "gpfs", "beegfs", "cephfs", "ceph", "glusterfs",
        "fuse.glusterfs", "fuse.gcsfuse", "fuse.s3fs", "fuse.mountpoint-s3", "fuse.juicefs",
        "fuse.cephfs", "wekafs", "panfs", "cifs", "smb3",
    }
)

#: Set to 1 to declare that local paths are on storage every node shares.
SHARED_STORAGE_ENV = "SAGE_SHARED_STORAGE"

_TRUE = {"1", "true", "yes", "on"}


def storage_scheme(storage: str) -> str | None:
    """The lower-case URI scheme of ``storage`` (``"s3"`` for ``s3://b/p``), None for a path.

    ``file://`` URIs count as paths (scheme None): they name a folder on the local machine.
    """
    head, sep, _ = storage.partition("://")
    if not sep or not head or "/" in head:
        return None
    scheme = head.lower()
    return None if scheme == "file" else scheme


def mount_fstype(path: str, *, mounts: str) -> str | None:
    """Filesystem type of the mount that holds absolute ``path``, from /proc/mounts text.

    The longest mount point that is a prefix of ``path`` (on a path-component boundary) wins,
    as in the kernel's own lookup. Returns None when ``mounts`` names no mount at all.
    """
    norm = posixpath.normpath(path)
    best_point, best_type = "", None
    for line in mounts.splitlines():
        fields = line.split()
        if len(fields) < 3:
            continue
        point = fields[1].replace("\\040", " ")
        if point == "/" or norm == point or norm.startswith(point.rstrip("/") + "/"):
            if len(point) >= len(best_point):
                best_point, best_type = point, fields[2]
    return best_type


def _read_mounts() -> str:
    try:
        with open("/proc/mounts", encoding="utf-8") as fh:
            return fh.read()
    except OSError:
        return ""


def check_shared_storage(
    storage: str,
    *,
    num_nodes: int,
    declared_shared: bool | None = None,
    mounts: str | None = None,
) -> str | None:
    """Return a message when ``storage`` is not shared although the cluster has several nodes.

    Rules, in order:

    * one node: anything goes (None);
    * a URI with a scheme in :data:`SHARED_SCHEMES` (``s3://``, ``gs://``, ``gcs://``,
      ``abfs://`` ...): shared (None);
    * any other scheme (``memory://``, ``ftp://`` ...): a message naming the allowed schemes;
    * a local path (or ``file://``): shared when the user declares it (``declared_shared``, or
      when that is None the environment variable ``SAGE_SHARED_STORAGE=1``), or when the mount
      holding it is a network filesystem (:data:`SHARED_FSTYPES`, looked up in ``mounts``,
      /proc/mounts text, read from the machine when None); otherwise a message saying how to fix it.

    Args:
        storage: the ``--storage`` value of ``sage sweep run``.
        num_nodes: alive nodes in the Ray cluster (``len(ray.nodes())`` of the alive ones).
        declared_shared: the user's declaration that local paths are shared; None reads the env.
        mounts: /proc/mounts text; None reads it from this machine.

    Raises:
        ConfigError: ``num_nodes`` < 1 or ``storage`` empty (programming mistakes, not cluster ones).
    """
    if num_nodes < 1:
        raise ConfigError(f"num_nodes: got {num_nodes}; a Ray cluster has at least 1 node")
    if not storage or not storage.strip():
        raise ConfigError("storage: got an empty string; give a folder or a URI such as s3://bucket/sage-runs")
    if num_nodes == 1:
        return None

    scheme = storage_scheme(storage)
    if scheme is not None:
        return _uri_problem(storage, scheme=scheme, num_nodes=num_nodes)
    if declared_shared is None:
        declared_shared = os.environ.get(SHARED_STORAGE_ENV, "").strip().lower() in _TRUE
    if declared_shared:
        return None
    return _local_path_problem(storage, num_nodes=num_nodes, mounts=_read_mounts() if mounts is None else mounts)


def _uri_problem(storage: str, *, scheme: str, num_nodes: int) -> str | None:
    """None for a scheme every node reaches, else the message naming the allowed ones."""
    if scheme in SHARED_SCHEMES:
        return None
    allowed = ", ".join(f"{s}://" for s in sorted(SHARED_SCHEMES))
    return (
        f"storage: {storage!r} uses the scheme {scheme}://, which the {num_nodes} nodes of this "
        f"cluster do not share; use object storage ({allowed}) or a folder on a shared "
        f"filesystem (NFS, Lustre, GPFS ...)"
    )


def _local_path_problem(storage: str, *, num_nodes: int, mounts: str) -> str | None:
    """None when the mount holding the (undeclared) local path is a network filesystem, else how to fix it."""
    path = storage[len("file://"):] if storage.lower().startswith("file://") else storage
    path = os.path.abspath(os.path.expanduser(path))
    fstype = mount_fstype(path, mounts=mounts)
    if fstype is not None and fstype.lower() in SHARED_FSTYPES:
        return None

    where = f" (mount type {fstype})" if fstype else ""
    return (
        f"storage: {storage!r} is a local path{where}, but this Ray cluster has {num_nodes} nodes: "
        f"trials on other nodes and a replacement head node would not see it. Use object storage "
        f"(e.g. --storage s3://BUCKET/sage-runs or gs://BUCKET/sage-runs), or a folder on a "
        f"shared filesystem; if this path is shared (a mount every node sees), set "
        f"{SHARED_STORAGE_ENV}=1"
    )
