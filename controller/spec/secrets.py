"""kind: Secret values, read when the specs load, and the references to them resolved.

A value lives only in memory: on the Secret (a private attribute, never dumped) and on the
fields that reference it (a guest's graphics password, cloud-init text). Plans, reports, logs,
ownership records and /status carry :func:`secret_digest` at most. A file encrypted with age
(``encryption: age``) is decrypted in memory with the instance's identity (--age-identity FILE
or VIRTSYNC_AGE_IDENTITY_FILE); its plaintext is never written anywhere.
"""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from controller.errors import Diagnostic
from controller.spec.models import Guest, Secret, StoragePool
from controller.spec.pool_sources import POOL_TYPES
from controller.spec.specset import Located, SpecSet
from controller.spec.volume import encryption_secrets

MAX_BYTES = 64 * 1024  # a password, a key, a certificate: a bigger file is a mistake
AGE_IDENTITY_ENV = "VIRTSYNC_AGE_IDENTITY_FILE"
NO_AGE_IDENTITY = f"no age identity: give --age-identity FILE or {AGE_IDENTITY_ENV}"
_AGE_MAGIC = (b"age-encryption.org/v1\n", b"-----BEGIN AGE ENCRYPTED FILE-----")

# --age-identity of the command being run (over the environment's VIRTSYNC_AGE_IDENTITY_FILE);
# a plain global, not a context variable: the service's worker threads load specs too.
_age_identity: list[str | None] = [None]


@contextmanager
def age_identity(path: str | None) -> Iterator[None]:
    """The age identity file the specs loaded inside decrypt ``encryption: age`` Secrets with
    (None: VIRTSYNC_AGE_IDENTITY_FILE of the environment, if set)."""
    before = _age_identity[0]
    _age_identity[0] = path
    try:
        yield
    finally:
        _age_identity[0] = before


def secret_digest(value: str | None) -> str | None:
    """What may be shown of a value: enough to tell a change, nothing to read it back from."""
    if value is None:
        return None
    return "sha256:" + hashlib.sha256(b"virtsync-secret\0" + value.encode()).hexdigest()[:16]


_UUID_NAMESPACE = uuid.UUID("5b0f8f5e-3a5c-4c1e-9d4e-7a1f0c2b9e11")


def libvirt_secret_uuid(name: str) -> str:
    """The UUID of the libvirt secret made from kind: Secret NAME: known before it exists, so a
    definition can reference it in the same plan that makes it."""
    return str(uuid.uuid5(_UUID_NAMESPACE, "virtsync-secret/" + name))


def usage_key(usage: str, usage_id: str) -> str:
    """How a libvirt secret is known on its host: libvirt allows one secret per usage."""
    return f"{usage}:{usage_id}"


def libvirt_usage_id(secret: Secret) -> str:
    assert secret.spec.libvirt is not None
    return secret.spec.libvirt.id or f"virtsync-{secret.metadata.name}"


def libvirt_refs(obj: object) -> set[str]:
    """The Secrets an object needs as libvirt secret objects on its host."""
    if isinstance(obj, Guest) and obj.spec.tpm is not None and obj.spec.tpm.encryption_secret_ref:
        return {obj.spec.tpm.encryption_secret_ref}
    if isinstance(obj, StoragePool) and obj.spec.source is not None and obj.spec.source.auth is not None:
        return {obj.spec.source.auth.secret_ref}  # iSCSI CHAP, Ceph cephx
    return encryption_secrets(obj)  # a Volume's LUKS passphrase


def value_digests(specs: SpecSet) -> dict[str, str]:
    """Each Secret's value digest, by name: what a change of a value file is seen by."""
    return {i.obj.metadata.name: secret_digest(i.obj.secret_value) or "" for i in specs.of_kind(Secret)}


def secret_inputs(obj: object, values: Mapping[str, str]) -> list[str]:
    """The digests of the values an object uses (its console password, its secrets as libvirt
    objects): a new value in a Secret's file changes the object, though its spec text did not."""
    names = set(libvirt_refs(obj))
    if isinstance(obj, Guest) and obj.spec.graphics is not None and obj.spec.graphics.password_secret_ref:
        names.add(obj.spec.graphics.password_secret_ref)
    return [f"{n}={values.get(n, '')}" for n in sorted(names)]


class _AgeIdentities:
    """The identities of one identity file, read at most once per load (and only if a Secret is
    encrypted). The file holds private keys: nothing of its text is ever in a message."""

    def __init__(self, env: Mapping[str, str], path: str | None) -> None:
        self.path = path or _age_identity[0] or env.get(AGE_IDENTITY_ENV) or None
        self._loaded: tuple[list[Any], str | None] | None = None

    def get(self) -> tuple[list[Any], str | None]:
        """(identities, None), or ([], why there are none)."""
        if self._loaded is None:
            self._loaded = self._read()
        return self._loaded

    def _read(self) -> tuple[list[Any], str | None]:
        import pyrage  # type: ignore[import-untyped]

        if self.path is None:
            return [], NO_AGE_IDENTITY
        where = f"the age identity {self.path}"
        try:
            with open(self.path, "rb") as fh:
                data = fh.read(MAX_BYTES + 1)
        except OSError as exc:
            return [], f"cannot read {where}: {exc.strerror or exc}"
        if len(data) > MAX_BYTES:
            return [], f"{where} is over {MAX_BYTES} bytes"
        found: list[Any] = []
        try:
            if b"PRIVATE KEY-----" in data:  # an SSH key, as age -i takes it
                found.append(pyrage.ssh.Identity.from_buffer(data))
            else:
                for line in data.decode("utf-8", "replace").splitlines():
                    line = line.strip()
                    if line.startswith("AGE-SECRET-KEY-"):
                        found.append(pyrage.x25519.Identity.from_str(line))
        except pyrage.IdentityError as exc:  # the reason names no key material
            return [], f"{where} holds an identity age cannot use ({exc})"
        if not found:
            return [], (f"{where} holds no identity: expected AGE-SECRET-KEY-1… lines (age-keygen) "
                        "or an unencrypted SSH private key")
        return found, None


def _decrypt(data: bytes, name: str, keys: _AgeIdentities) -> tuple[str | None, str | None]:
    """(plaintext, None) or (None, why not): in memory, never through a file."""
    import pyrage

    if not data.lstrip().startswith(_AGE_MAGIC):
        return None, f"{name} is not an age file (expected age's binary or armored (-a) format)"
    identities, problem = keys.get()
    if problem is not None:
        return None, problem
    try:
        plain: bytes = pyrage.decrypt(data, identities)
    except pyrage.DecryptError as exc:
        if "no matching keys" in str(exc).lower():
            return None, f"the identity cannot decrypt {name} (it was encrypted to other recipients)"
        return None, f"cannot decrypt {name}: {exc}"
    try:
        return plain.decode("utf-8"), None
    except UnicodeDecodeError:
        return None, f"{name}: the decrypted value is not UTF-8 text"


def _read_value(item: Located, env: Mapping[str, str], keys: _AgeIdentities) -> tuple[str | None, Diagnostic | None]:
    spec = item.obj.spec

    def fail(field: str, message: str) -> tuple[None, Diagnostic]:
        line, col = item.where("spec", field)
        return None, Diagnostic(item.file, line, col, message)

    if spec.value is not None:
        return spec.value, None
    if spec.from_env is not None:
        if spec.from_env not in env:
            return (None, None) if spec.optional else fail("fromEnv", f"the environment has no {spec.from_env}")
        return env[spec.from_env], None
    path = (Path(item.file).resolve().parent / (spec.from_file or "")).resolve()
    if spec.optional and not path.exists():
        return None, None  # a value still to be filled in: no value, nothing set from it
    try:
        if path.stat().st_size > MAX_BYTES:
            return fail("fromFile", f"{spec.from_file}: over {MAX_BYTES} bytes")
        data = path.read_bytes()
        if spec.encryption == "age":
            text, problem = _decrypt(data, spec.from_file or "", keys)
            if problem is not None or text is None:
                return fail("fromFile", problem or "")
        else:
            text = data.decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        return fail("fromFile", f"cannot read {spec.from_file}: {getattr(exc, 'strerror', None) or exc}")
    return text.removesuffix("\n"), None


def secret_files(items: list[Located]) -> set[str]:
    """Files Secrets read their values from: never specs, whatever their suffix."""
    out = set()
    for item in items:
        if isinstance(item.obj, Secret) and item.obj.spec.from_file:
            out.add(str((Path(item.file).resolve().parent / item.obj.spec.from_file).resolve()))
    return out


def secret_values(items: list[Located]) -> dict[str, str | None]:
    """Each Secret's value by name, once resolve_secrets read them (None: it could not be read,
    and that is reported at the Secret)."""
    return {i.obj.metadata.name: i.obj.secret_value for i in items if isinstance(i.obj, Secret)}


def resolve_secrets(items: list[Located], env: Mapping[str, str] | None = None, *,
                    age_identity_file: str | None = None) -> tuple[list[Located], list[Diagnostic]]:
    """Every Secret's value read (an age-encrypted one decrypted with ``age_identity_file``, or
    --age-identity, or VIRTSYNC_AGE_IDENTITY_FILE); every reference to one filled in (or named as
    missing)."""
    env = os.environ if env is None else env
    keys = _AgeIdentities(env, age_identity_file)
    problems: list[Diagnostic] = []
    values: dict[str, str] = {}
    for item in items:
        if isinstance(item.obj, Secret):
            value, problem = _read_value(item, env, keys)
            if problem is not None:
                problems.append(problem)
            elif value is not None:
                item.obj._value = value
                values[item.obj.metadata.name] = value
    secrets = {i.obj.metadata.name: i.obj for i in items if isinstance(i.obj, Secret)}
    out = []
    for item in items:
        out.append(_with_references(item, values, set(secrets), problems))
        for ref in sorted(libvirt_refs(item.obj)):
            problem = _libvirt_ref_problem(item, secrets.get(ref), ref)
            if problem is not None:
                problems.append(problem)
    return out, problems


def _pool_auth_problem(item: Located, pool: StoragePool, secret: Secret | None, ref: str) -> Diagnostic | None:
    line, col = item.where("spec", "source", "auth", "secretRef")
    usage = POOL_TYPES[pool.spec.type].auth
    if secret is None:
        return Diagnostic(item.file, line, col, f"no kind: Secret named {ref!r} in the specs")
    if secret.spec.libvirt is None or secret.spec.libvirt.usage != usage:
        return Diagnostic(item.file, line, col, f"Secret {ref!r} authenticates a {pool.spec.type} pool: it needs "
                          f"libvirt: {{usage: {usage}}}")
    return None


def _libvirt_ref_problem(item: Located, secret: Secret | None, ref: str) -> Diagnostic | None:
    if isinstance(item.obj, StoragePool):
        return _pool_auth_problem(item, item.obj, secret, ref)
    if not isinstance(item.obj, Guest):
        return None  # a Volume's secretRef: spec/volume.check_volumes
    line, col = item.where("spec", "tpm", "encryptionSecretRef")
    if secret is None:
        return Diagnostic(item.file, line, col, f"no kind: Secret named {ref!r} in the specs")
    if secret.spec.libvirt is None or secret.spec.libvirt.usage != "vtpm":
        return Diagnostic(item.file, line, col, f"Secret {ref!r} encrypts a TPM's state: it needs "
                          "libvirt: {usage: vtpm}")
    return None


def _with_references(item: Located, values: dict[str, str], declared: set[str],
                     problems: list[Diagnostic]) -> Located:
    guest = item.obj
    if not isinstance(guest, Guest) or guest.spec.graphics is None:
        return item
    ref = guest.spec.graphics.password_secret_ref
    if ref is None:
        return item
    if ref not in values:
        if ref not in declared:  # a Secret whose value failed to load is reported there
            line, col = item.where("spec", "graphics", "passwordSecretRef")
            problems.append(Diagnostic(item.file, line, col, f"no kind: Secret named {ref!r} in the specs"))
        return item
    graphics = guest.spec.graphics.model_copy()
    graphics._password = values[ref]
    spec = guest.spec.model_copy(update={"graphics": graphics})
    return Located(guest.model_copy(update={"spec": spec}), item.file, item.doc)
