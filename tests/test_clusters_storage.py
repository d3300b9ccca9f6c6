"""sweeps.cluster_checks.check_shared_storage: multi-node clusters need shared storage."""

from __future__ import annotations

import pytest

from sage_core.defs.errors import ConfigError
from sweeps.cluster_checks import SHARED_STORAGE_ENV, check_shared_storage, mount_fstype, storage_scheme

MOUNTS = """\
/dev/root / ext4 rw,relatime 0 0
tmpfs /tmp tmpfs rw 0 0
nas:/export/home /home nfs4 rw,vers=4.2 0 0
192.0.2.9@tcp:/scratch /scratch lustre rw 0 0
/dev/sdb1 /home/alice/local ext4 rw 0 0
/dev/sdc1 /mnt/my\\040disk xfs rw 0 0
"""


@pytest.mark.parametrize("uri", ["s3://bucket/sage-runs", "gs://b/p", "gcs://b/p", "abfs://c@acct/p",
                                 "S3://Bucket/x", "hdfs://nn:8020/runs"])
def test_object_storage_is_shared_on_any_cluster(uri):
    assert check_shared_storage(uri, num_nodes=8, declared_shared=False, mounts="") is None


@pytest.mark.parametrize("storage", ["runs/demo", "/tmp/x", "memory://x", "file:///tmp/x"])
def test_single_node_accepts_anything(storage):
    assert check_shared_storage(storage, num_nodes=1, declared_shared=False, mounts=MOUNTS) is None


def test_local_path_on_multi_node_cluster_is_reported_with_the_fix():
    msg = check_shared_storage("/tmp/runs", num_nodes=3, declared_shared=False, mounts=MOUNTS)
    assert msg is not None
    assert "'/tmp/runs'" in msg and "3 nodes" in msg and "mount type tmpfs" in msg
    assert "s3://" in msg and f"{SHARED_STORAGE_ENV}=1" in msg


def test_file_uri_counts_as_local_path():
    assert check_shared_storage("file:///tmp/runs", num_nodes=2, declared_shared=False, mounts=MOUNTS) is not None


def test_unshared_scheme_is_reported_with_the_allowed_ones():
    msg = check_shared_storage("memory://runs", num_nodes=2, declared_shared=False, mounts=MOUNTS)
    assert msg is not None and "memory://" in msg and "gs://" in msg and "s3://" in msg


def test_network_filesystem_mounts_are_shared():
    assert check_shared_storage("/home/bob/runs", num_nodes=4, declared_shared=False, mounts=MOUNTS) is None
    assert check_shared_storage("/scratch/sage", num_nodes=4, declared_shared=False, mounts=MOUNTS) is None
    # A local disk mounted below an NFS home is not shared: the longest mount point wins.
    msg = check_shared_storage("/home/alice/local/runs", num_nodes=4, declared_shared=False, mounts=MOUNTS)
    assert msg is not None and "ext4" in msg


def test_declared_shared_path_is_accepted_explicitly_and_from_the_environment(monkeypatch):
    assert check_shared_storage("/tmp/runs", num_nodes=2, declared_shared=True, mounts=MOUNTS) is None
    monkeypatch.setenv(SHARED_STORAGE_ENV, "1")
    assert check_shared_storage("/tmp/runs", num_nodes=2, mounts=MOUNTS) is None
    monkeypatch.setenv(SHARED_STORAGE_ENV, "0")
    assert check_shared_storage("/tmp/runs", num_nodes=2, mounts=MOUNTS) is not None


def test_mount_fstype_longest_prefix_and_escapes():
    assert mount_fstype("/home/bob", mounts=MOUNTS) == "nfs4"
    assert mount_fstype("/homework", mounts=MOUNTS) == "ext4"  # not under /home
    assert mount_fstype("/mnt/my disk/x", mounts=MOUNTS) == "xfs"
    assert mount_fstype("/anything", mounts="") is None


def test_storage_scheme():
    assert storage_scheme("s3://b/p") == "s3"
    assert storage_scheme("GS://b") == "gs"
    assert storage_scheme("runs/a://b") is None
    assert storage_scheme("file:///x") is None
    assert storage_scheme("/abs/path") is None


@pytest.mark.parametrize("kwargs,field", [({"storage": "s3://b", "num_nodes": 0}, "num_nodes"),
                                          ({"storage": " ", "num_nodes": 2}, "storage")])
def test_programming_mistakes_raise_config_error_naming_the_field(kwargs, field):
    with pytest.raises(ConfigError, match=field):
        check_shared_storage(**kwargs)
