"""kind: Volume on libvirt's test driver: plans of each action, grow only, ownership markers,
prune with deletePolicy, and references checked at file:line:column."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.integration.conftest import VirtsyncCli, connection, guest_doc, host_doc, write_host, write_specs

MIB = 1 << 20


def _pool(name: str, path: Path) -> dict[str, Any]:
    return {"apiVersion": "virtsync/v1", "kind": "StoragePool", "metadata": {"name": name},
            "spec": {"host": "kvm1", "path": str(path)}}


def _volume(name: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "virtsync/v1", "kind": "Volume", "metadata": {"name": name},
            "spec": {"host": "kvm1", **spec}}


def _secret(name: str, file: str) -> dict[str, Any]:
    return {"apiVersion": "virtsync/v1", "kind": "Secret", "metadata": {"name": name},
            "spec": {"fromFile": file, "libvirt": {"usage": "volume"}}}


def _base(tmp_path: Path) -> tuple[str, list[dict[str, Any]]]:
    uri = write_host(tmp_path)
    host = host_doc(uri)
    host["spec"]["storage"] = {"allowedDirs": [str(tmp_path)]}
    return uri, [host, _pool("fast", tmp_path / "fast"), _pool("slow", tmp_path / "slow")]


def _actions(run: Any) -> list[dict[str, Any]]:
    return [a for h in run.json()["hosts"] for a in h["actions"]]


def _volumes(uri: str, pool: str) -> dict[str, int]:
    p = connection(uri).storagePoolLookupByName(pool)
    p.refresh(0)
    return {v.name(): int(v.info()[1]) for v in p.listAllVolumes(0)}


def test_volume_is_made_with_its_marker_and_replans_empty(tmp_path: Path, virtsync: VirtsyncCli) -> None:
    uri, docs = _base(tmp_path)
    specs = write_specs(tmp_path / "specs", [*docs, _volume("data.qcow2", pool="fast", size="16MiB")])
    plan = virtsync("plan", specs, "--format", "json")
    assert plan.code == 2, plan.err
    made = [a for a in _actions(plan) if a["kind"] == "Volume"]
    assert [(a["op"], a["name"], a["impact"]) for a in made] == [("define-volume", "data.qcow2", "create")]
    assert made[0]["args"]["capacity"] == 16 * MIB and made[0]["args"]["format"] == "qcow2"
    assert made[0]["changes"][0]["note"] == "storageVolCreateXML"
    assert virtsync("apply", specs, "--yes").code == 0
    vols = _volumes(uri, "fast")
    assert vols["data.qcow2"] == 16 * MIB
    assert ".virtsync-vol-default-keep--data.qcow2" in vols, vols
    again = virtsync("plan", specs)
    assert again.code == 0 and "No changes" in again.out, again.out


def test_a_larger_size_grows_the_volume_and_a_smaller_one_is_refused_naming_both(
        tmp_path: Path, virtsync: VirtsyncCli) -> None:
    uri, docs = _base(tmp_path)
    specs = write_specs(tmp_path / "specs", [*docs, _volume("data.qcow2", pool="fast", size="16MiB")])
    assert virtsync("apply", specs, "--yes").code == 0
    specs = write_specs(tmp_path / "specs", [*docs, _volume("data.qcow2", pool="fast", size="32MiB")])
    plan = virtsync("plan", specs, "--format", "json")
    grow = [a for a in _actions(plan) if a["kind"] == "Volume"]
    assert [(a["op"], a["impact"]) for a in grow] == [("resize-volume", "live")]
    assert grow[0]["changes"][0]["desired"] == "32MiB" and grow[0]["changes"][0]["defined"] == "16MiB"
    assert grow[0]["changes"][0]["note"] == "storageVolResize"  # attached to no running guest
    # (the test driver has no virStorageVolResize: growing is applied on real hosts, tests/e2e/test_volumes.py)
    specs = write_specs(tmp_path / "specs", [*docs, _volume("data.qcow2", pool="fast", size="8MiB")])
    shrink = virtsync("plan", specs)
    assert shrink.code == 1
    assert "volume data.qcow2: size 8MiB is smaller than the volume (16MiB); volumes are never shrunk" in (
        shrink.out + shrink.err)
    assert virtsync("apply", specs, "--yes").code == 1
    assert _volumes(uri, "fast")["data.qcow2"] == 16 * MIB, "nothing shrunk"


def test_a_volume_is_cloned_on_its_host(tmp_path: Path, virtsync: VirtsyncCli) -> None:
    uri, docs = _base(tmp_path)
    src = _volume("base.img", pool="slow", format="raw", size="8MiB")
    specs = write_specs(tmp_path / "specs", [*docs, src])
    assert virtsync("apply", specs, "--yes").code == 0
    # (across pools on real hosts: the test driver finds a clone's source only in the same pool)
    copy = _volume("copy.img", pool="slow", format="raw", **{"from": "base.img"})
    specs = write_specs(tmp_path / "specs", [*docs, src, copy])
    plan = virtsync("plan", specs, "--format", "json")
    clone = [a for a in _actions(plan) if a["op"] == "clone-volume"]
    assert len(clone) == 1 and clone[0]["args"]["from_pool"] == "slow" and clone[0]["args"]["from_host"] == "kvm1"
    assert clone[0]["changes"][0]["note"] == "storageVolCreateXMLFrom"
    applied = virtsync("apply", specs, "--yes")
    assert applied.code == 0, applied.out + applied.err
    vols = _volumes(uri, "slow")
    assert vols["copy.img"] == 8 * MIB and "base.img" in vols
    assert ".virtsync-vol-default-keep--copy.img" in vols
    assert virtsync("plan", specs).code == 0


def test_an_unowned_volume_is_refused_until_adopted_and_then_marked(
        tmp_path: Path, virtsync: VirtsyncCli) -> None:
    uri, docs = _base(tmp_path)
    assert virtsync("apply", write_specs(tmp_path / "specs", docs), "--yes").code == 0
    pool = connection(uri).storagePoolLookupByName("fast")
    pool.createXML(f"<volume><name>theirs.img</name><capacity>{4 * MIB}</capacity></volume>", 0)
    specs = write_specs(tmp_path / "specs", [*docs, _volume("theirs.img", pool="fast", size="8MiB",
                                                           format="raw")])
    refused = virtsync("apply", specs, "--yes")
    assert refused.code == 1
    assert "not managed by virtsync; set adopt: true" in refused.out + refused.err
    assert _volumes(uri, "fast")["theirs.img"] == 4 * MIB, "an unowned volume is never changed"
    specs = write_specs(tmp_path / "specs", [*docs, _volume("theirs.img", pool="fast", format="raw",
                                                           adopt=True)])
    plan = virtsync("plan", specs, "--format", "json")
    assert [a["op"] for a in _actions(plan)] == ["mark-volume"]
    assert virtsync("apply", specs, "--yes").code == 0
    vols = _volumes(uri, "fast")
    assert vols["theirs.img"] == 4 * MIB and ".virtsync-vol-default-keep--theirs.img" in vols
    assert virtsync("plan", specs).code == 0


def test_prune_deletes_only_delete_policy_volumes_and_lets_go_of_kept_ones(
        tmp_path: Path, virtsync: VirtsyncCli) -> None:
    uri, docs = _base(tmp_path)
    vols = [_volume("gone.img", pool="fast", format="raw", size="4MiB", deletePolicy="delete"),
            _volume("kept.img", pool="fast", format="raw", size="4MiB")]
    assert virtsync("apply", write_specs(tmp_path / "specs", [*docs, *vols]), "--yes").code == 0
    specs = write_specs(tmp_path / "specs", docs)
    assert "No changes" in virtsync("apply", specs, "--yes").out, "nothing deleted without --prune"
    plan = virtsync("plan", specs, "--prune", "--format", "json")
    ops = sorted((a["op"], a["name"]) for a in _actions(plan))
    assert ops == [("delete-volume", "gone.img"), ("mark-volume", "kept.img")]
    guard = virtsync("apply", specs, "--prune", "--yes", "--max-deletions", "0")
    assert guard.code == 1 and "refusing to delete or detach 1 objects" in guard.out + guard.err
    assert "gone.img" in _volumes(uri, "fast")
    assert virtsync("apply", specs, "--prune", "--yes").code == 0
    left = _volumes(uri, "fast")
    assert "gone.img" not in left and ".virtsync-vol-default-delete--gone.img" not in left
    assert "kept.img" in left and ".virtsync-vol-default-keep--kept.img" not in left
    assert virtsync("plan", specs, "--prune").code == 0


def test_a_guest_disk_on_a_volume_uses_its_file(tmp_path: Path, virtsync: VirtsyncCli) -> None:
    uri, docs = _base(tmp_path)
    guest = guest_doc("g1", memory="64MiB", disks=[{"name": "data", "volume": "data.img"}])
    specs = write_specs(tmp_path / "specs", [*docs, _volume("data.img", pool="fast", format="raw",
                                                           size="4MiB"), guest])
    applied = virtsync("apply", specs, "--yes")
    assert applied.code == 0, applied.out + applied.err
    xml = connection(uri).lookupByName("g1").XMLDesc(0)
    assert f"file='{tmp_path / 'fast' / 'data.img'}'" in xml or f'file="{tmp_path / "fast" / "data.img"}"' in xml
    assert virtsync("plan", specs).code == 0


def test_unknown_pool_secret_and_volume_references_are_errors_at_their_place(
        tmp_path: Path, virtsync: VirtsyncCli) -> None:
    _, docs = _base(tmp_path)
    (tmp_path / "pass").write_text("s3cret-passphrase\n")
    bad = [*docs, _secret("vtpmish", str(tmp_path / "pass")),
           _volume("a.img", pool="nope", size="4MiB"),
           _volume("b.img", pool="fast", size="4MiB", encryption={"secretRef": "missing"}),
           guest_doc("g1", memory="64MiB", disks=[{"name": "d", "volume": "nosuch"}])]
    bad[3]["spec"]["libvirt"] = {"usage": "vtpm"}
    bad.append(_volume("c.img", pool="fast", size="4MiB", encryption={"secretRef": "vtpmish"}))
    path = write_specs(tmp_path / "specs", bad)
    run = virtsync("validate", path, "--format", "json")
    assert run.code == 1
    found = {d["message"]: (d["line"], d["column"]) for d in run.json()["diagnostics"]}
    lines = path.read_text().splitlines()

    def at(message: str, text: str) -> None:
        assert message in found, found
        line, col = found[message]
        assert lines[line - 1][col - 1:].startswith(text), (message, lines[line - 1])

    at("unknown storage pool 'nope' on host 'kvm1' (declare it as kind: StoragePool)", '"nope"')
    at("no kind: Secret named 'missing' in the specs", '"missing"')
    at("no kind: Volume named 'nosuch' in the specs", '"nosuch"')
    at("Secret 'vtpmish' is a volume's LUKS passphrase: it needs libvirt: {usage: volume}", '"vtpmish"')


def test_a_luks_volume_is_refused_on_a_host_without_secrets_and_never_shows_the_passphrase(
        tmp_path: Path, virtsync: VirtsyncCli) -> None:
    uri, docs = _base(tmp_path)
    (tmp_path / "pass").write_text("correct-horse-battery\n")
    specs = write_specs(tmp_path / "specs", [*docs, _secret("vkey", str(tmp_path / "pass")),
                                             _volume("enc.qcow2", pool="fast", size="16MiB",
                                                     encryption={"secretRef": "vkey"})])
    plan = virtsync("plan", specs, "--format", "json")
    assert plan.code == 1, plan.err  # the test driver has no secret driver: made on real hosts (e2e)
    problems = [p["message"] for h in plan.json()["hosts"] for p in h["problems"]]
    assert any("enc.qcow2" in p and "no libvirt secret driver" in p for p in problems), problems
    assert not [a for a in _actions(plan) if a["kind"] == "Volume"]
    text = virtsync("apply", specs, "--yes")
    assert text.code == 1
    assert "enc.qcow2" not in _volumes(uri, "fast")
    assert "correct-horse-battery" not in plan.out + plan.err + text.out + text.err


def test_export_of_a_host_with_volumes_plans_no_changes(tmp_path: Path, virtsync: VirtsyncCli) -> None:
    uri, docs = _base(tmp_path)
    vols = [_volume("data.qcow2", pool="fast", size="16MiB"),
            _volume("scratch.img", pool="slow", format="raw", size="4MiB", deletePolicy="delete")]
    guest = guest_doc("g1", memory="64MiB", disks=[{"name": "data", "volume": "data.qcow2"}])
    assert virtsync("apply", write_specs(tmp_path / "specs", [*docs, *vols, guest]), "--yes").code == 0
    out = tmp_path / "out.yaml"
    exported = virtsync("export", "--connect", uri, "--host", "kvm1", "-o", out)
    assert exported.code == 0, exported.err
    text = out.read_text()
    assert "kind: Volume" in text and "name: data.qcow2" in text and "name: scratch.img" in text
    assert "deletePolicy: delete" in text and ".virtsync-vol-" not in text
    assert virtsync("validate", out).code == 0
    plan = virtsync("plan", out, "--connect", uri)
    assert plan.code == 0 and "No changes" in plan.out, plan.out + plan.err
