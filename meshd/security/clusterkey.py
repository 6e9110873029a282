"""The cluster key: a 256-bit AES-GCM key file every meshd host holds, sealing secrets at rest.

Sealed layout (binary, never PEM):  b"MSK1" | key id (8) | nonce (12) | ciphertext+tag.
The associated data is the value's etcd path, so a blob copied to another path (say, one
mesh's CA key moved under another mesh) no longer authenticates (NIST SP 800-38D §5.2.1.1:
AAD is authenticated, not encrypted). The key id lets "wrong key" be told apart from
"tampered" without trying a decryption.
"""
from __future__ import annotations

import base64
import hashlib
import json
import os
import stat
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from meshd.security.errors import ClusterKeyInvalid, DecryptionFailed, NoClusterKey, WrongClusterKey

DEFAULT_PATH = "/etc/meshd/cluster.key"
_HEADER = "meshd-cluster-key v1 "
_MAGIC = b"MSK1"
_KEY_ID_LEN = 8
# 96-bit random nonces: GCM's recommended size. With random nonces the key must seal fewer
# than 2^32 values (SP 800-38D §8.3); CA keys and tokens are nowhere near that.
_NONCE_LEN = 12
_AD_PREFIX = b"meshd/sealed/v1\x00"


class ClusterKey:
    """A loaded cluster key. `seal`/`open` bind each value to the path it is stored under."""

    __slots__ = ("_aead", "key_id", "source")

    def __init__(self, key: bytes, source: str = "<memory>"):
        if len(key) != 32:
            raise ClusterKeyInvalid(source, "length")
        self._aead = AESGCM(key)
        self.key_id = hashlib.sha256(b"meshd cluster key id\x00" + key).hexdigest()[: 2 * _KEY_ID_LEN]
        self.source = source

    def __repr__(self) -> str:  # never show key material
        return f"ClusterKey(id={self.key_id}, source={self.source})"

    @staticmethod
    def generate(path: str | os.PathLike = DEFAULT_PATH) -> "ClusterKey":
        """Create a new key file (mode 0600, refusing to overwrite one) and return the key."""
        p = Path(path)
        p.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        key = AESGCM.generate_key(bit_length=256)
        line = (_HEADER + base64.urlsafe_b64encode(key).decode() + "\n").encode()
        try:
            # O_EXCL: two `meshd init`s racing must not both believe their key is the key.
            fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            raise ClusterKeyInvalid(str(p), "exists") from None
        try:
            os.fchmod(fd, 0o600)  # the umask may have narrowed it; never widened
            os.write(fd, line)
            os.fsync(fd)
        finally:
            os.close(fd)
        return ClusterKey(key, str(p))

    @staticmethod
    def load(path: str | os.PathLike = DEFAULT_PATH) -> "ClusterKey":
        """Read a key file; refuse one that group or others can read, like ssh does."""
        p = Path(path)
        try:
            st = p.stat()
            raw = p.read_bytes()
        except FileNotFoundError:
            raise NoClusterKey(str(p)) from None
        if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise ClusterKeyInvalid(str(p), "permissions")
        text = raw.decode("ascii", "replace").strip()
        if not text.startswith(_HEADER):
            raise ClusterKeyInvalid(str(p), "format")
        try:
            key = base64.urlsafe_b64decode(text[len(_HEADER):])
        except ValueError as err:
            raise ClusterKeyInvalid(str(p), "format") from err
        return ClusterKey(key, str(p))

    # -- envelope ----------------------------------------------------------------------
    def seal(self, path: str, plaintext: bytes) -> bytes:
        """Encrypt `plaintext` for storage at `path` (a registry path, e.g. ca/m1/keys/<id>)."""
        nonce = os.urandom(_NONCE_LEN)
        return _MAGIC + bytes.fromhex(self.key_id) + nonce + self._aead.encrypt(nonce, plaintext, _ad(path))

    def open(self, path: str, blob: bytes) -> bytes:
        """Decrypt a value read from `path`; raise if it was sealed elsewhere or altered."""
        head = len(_MAGIC) + _KEY_ID_LEN + _NONCE_LEN
        if len(blob) < head + 16 or not blob.startswith(_MAGIC):
            raise DecryptionFailed(path)
        sealed_id = blob[len(_MAGIC): len(_MAGIC) + _KEY_ID_LEN].hex()
        if sealed_id != self.key_id:
            raise WrongClusterKey(path, sealed_id, self.key_id)
        nonce = blob[len(_MAGIC) + _KEY_ID_LEN: head]
        try:
            return self._aead.decrypt(nonce, blob[head:], _ad(path))
        except InvalidTag as err:
            raise DecryptionFailed(path) from err


def reseal_records(store, prefix: str, field: str, old: ClusterKey, new: ClusterKey) -> int:
    """Re-encrypt, from the `old` cluster key to the `new` one, the sealed value kept
    base64-encoded in `field` of every JSON record under `prefix` (a `registry.Store`);
    returns how many were re-sealed. Each record is rewritten conditioned on the revision
    read, and values already under `new` are left alone, so an interrupted run can simply
    be re-run (cluster key rotation, beside `meshd.security.ca.reseal_keys`)."""
    import registry  # noqa: PLC0415 - this module is the cipher; only rotation touches the store

    count = 0
    items, _ = store.scan(prefix)
    for item in items:
        doc = json.loads(item.value)
        sealed = base64.b64decode(doc[field])
        try:
            plain = old.open(item.path, sealed)
        except WrongClusterKey:
            new.open(item.path, sealed)  # raises unless it is already under the new key
            continue
        doc[field] = base64.b64encode(new.seal(item.path, plain)).decode()
        store.commit(registry.Write(item.path, json.dumps(doc).encode(), expect_revision=item.mod_revision))
        count += 1
    return count


def _ad(path: str) -> bytes:
    return _AD_PREFIX + path.encode()


class KeyRef:
    """A cluster key that may be absent: `get()` raises NoClusterKey naming the path.

    meshd starts without a key (it can still serve reads and route); only signing needs it.
    """

    __slots__ = ("path", "_key")

    def __init__(self, path: str | os.PathLike = DEFAULT_PATH, key: ClusterKey | None = None):
        self.path = str(path)
        self._key = key

    def get(self) -> ClusterKey:
        if self._key is None:
            self._key = ClusterKey.load(self.path)
        return self._key
