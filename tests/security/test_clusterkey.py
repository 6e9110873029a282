"""The cluster key file and its AES-GCM envelope: path binding, wrong keys, tampering, absence."""
from __future__ import annotations

import os
import stat

import pytest

from meshd.security.clusterkey import ClusterKey, KeyRef
from meshd.security.errors import ClusterKeyInvalid, DecryptionFailed, NoClusterKey, WrongClusterKey

pytestmark = pytest.mark.identity


def test_generate_writes_a_0600_file_that_loads_to_the_same_key(tmp_path):
    path = tmp_path / "etc" / "cluster.key"
    made = ClusterKey.generate(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    loaded = ClusterKey.load(path)
    assert loaded.key_id == made.key_id
    assert loaded.open("p", made.seal("p", b"secret")) == b"secret"
    assert "secret" not in repr(loaded) and path.read_bytes() not in repr(loaded).encode()


def test_generate_refuses_to_overwrite(tmp_path):
    path = tmp_path / "cluster.key"
    first = ClusterKey.generate(path)
    with pytest.raises(ClusterKeyInvalid) as err:
        ClusterKey.generate(path)
    assert err.value.problem == "exists"
    assert ClusterKey.load(path).key_id == first.key_id


def test_missing_key_says_this_meshd_cannot_sign(tmp_path):
    path = tmp_path / "absent.key"
    with pytest.raises(NoClusterKey) as err:
        KeyRef(path).get()
    assert err.value.path == str(path)
    assert str(err.value) == f"this meshd cannot sign: no cluster key at {path}"


def test_key_readable_by_others_is_refused(tmp_path):
    path = tmp_path / "cluster.key"
    ClusterKey.generate(path)
    os.chmod(path, 0o644)
    with pytest.raises(ClusterKeyInvalid) as err:
        ClusterKey.load(path)
    assert err.value.problem == "permissions"


def test_garbage_key_file_is_refused(tmp_path):
    path = tmp_path / "cluster.key"
    path.write_bytes(b"-----BEGIN nothing-----\n")
    os.chmod(path, 0o600)
    with pytest.raises(ClusterKeyInvalid) as err:
        ClusterKey.load(path)
    assert err.value.problem == "format"


def test_sealed_value_is_bound_to_its_path(tmp_path):
    key = ClusterKey.generate(tmp_path / "k")
    blob = key.seal("ca/m1/keys/a", b"the CA key")
    assert b"the CA key" not in blob
    assert key.open("ca/m1/keys/a", blob) == b"the CA key"
    with pytest.raises(DecryptionFailed) as err:
        key.open("ca/m2/keys/a", blob)  # moved under another mesh
    assert err.value.path == "ca/m2/keys/a"


def test_nonces_are_fresh(tmp_path):
    key = ClusterKey.generate(tmp_path / "k")
    assert key.seal("p", b"same") != key.seal("p", b"same")


def test_another_cluster_key_cannot_open(tmp_path):
    a = ClusterKey.generate(tmp_path / "a")
    b = ClusterKey.generate(tmp_path / "b")
    with pytest.raises(WrongClusterKey) as err:
        b.open("p", a.seal("p", b"x"))
    assert (err.value.sealed_key_id, err.value.have_key_id) == (a.key_id, b.key_id)


@pytest.mark.parametrize("where", [0, 3, 10, 25, -1])
def test_any_flipped_byte_fails_authentication(tmp_path, where):
    key = ClusterKey.generate(tmp_path / "k")
    blob = bytearray(key.seal("p", b"payload"))
    blob[where] ^= 0x01
    with pytest.raises((DecryptionFailed, WrongClusterKey)):
        key.open("p", bytes(blob))
