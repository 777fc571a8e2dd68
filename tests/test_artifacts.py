import json

import pytest
import torch

from cifar_helpers.rundir.artifacts import (
    MissingStageError,
    RunDir,
    atomic_path,
    load_json,
    save_json,
    save_torch,
)
from cifar_helpers.rundir.manifest import MANIFEST_NAME, read_manifest
from cifar_helpers.rundir.registry import STAGES


def test_save_json_converts_tensors_and_leaves_no_temp_files(tmp_path):
    path = save_json(tmp_path / "a" / "x.json", {"t": torch.tensor([1, 2]), "n": 3})
    assert load_json(path) == {"t": [1, 2], "n": 3}
    assert sorted(p.name for p in path.parent.iterdir()) == [MANIFEST_NAME, "x.json"]


def test_failed_write_keeps_the_previous_file(tmp_path):
    path = save_json(tmp_path / "x.json", {"version": 1})
    with pytest.raises(TypeError):
        save_json(path, {"bad": object()})
    assert load_json(path) == {"version": 1}
    with pytest.raises(RuntimeError), atomic_path(path) as tmp:
        tmp.write_text("half")
        raise RuntimeError("interrupted")
    assert json.loads(path.read_text()) == {"version": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == [MANIFEST_NAME, "x.json"]


def test_a_malformed_manifest_entry_drops_only_itself(tmp_path):
    for name in ("a.json", "b.json"):
        save_json(tmp_path / name, {"name": name})
    manifest_path = tmp_path / MANIFEST_NAME
    document = json.loads(manifest_path.read_text())
    document["files"]["b.json"] = {"bytes": "many"}
    manifest_path.write_text(json.dumps(document))
    assert set(read_manifest(tmp_path)) == {"a.json"}
    save_json(tmp_path / "c.json", {})  # rewrites the manifest: a.json stays verified
    assert set(read_manifest(tmp_path)) == {"a.json", "c.json"}
    (tmp_path / "a.json").write_text('{"name": "altered"}')
    with pytest.raises(MissingStageError, match="damaged"):
        load_json(tmp_path / "a.json")


def test_save_torch_roundtrip(tmp_path):
    path = save_torch(tmp_path / "c.pt", {"w": torch.arange(4)})
    assert torch.equal(torch.load(path)["w"], torch.arange(4))


def test_require_names_the_notebook_to_run(tmp_path):
    run = RunDir(tmp_path)
    with pytest.raises(MissingStageError) as info:
        run.require("baseline", "checkpoint.pt")
    message = str(info.value)
    assert "01_baseline_training.ipynb" in message and "checkpoint.pt" in message


def test_is_complete_needs_every_output(tmp_path):
    run = RunDir(tmp_path)
    names = STAGES["failures"].outputs
    for name in names[:-1]:
        save_json(run.path("failures", name), {})
    assert not run.is_complete("failures")
    save_json(run.path("failures", names[-1]), {})
    assert run.is_complete("failures")


def test_unknown_stage_is_refused(tmp_path):
    with pytest.raises(ValueError, match="known stages"):
        RunDir(tmp_path).stage_dir("nope")


def test_stage_07_is_complete_with_all_its_outputs_for_its_seeds_and_no_failure_marker(tmp_path):
    # One marker file per stage, 07 included, written and read through failure_marker alone.
    from cifar_helpers.rundir.lineage import failure_marker
    from cifar_helpers.rundir.registry import REPLICATES_SPEC
    from cifar_helpers.rundir.replicate_layout import replicates_complete, replicates_dir

    assert not replicates_complete(tmp_path, [42, 43])
    for name in REPLICATES_SPEC.outputs:
        save_json(replicates_dir(tmp_path) / name, {"seeds": [42, 43]})
    assert replicates_complete(tmp_path, [42, 43]) and not replicates_complete(tmp_path, [42])
    marker = failure_marker(tmp_path, REPLICATES_SPEC.name)
    marker.parent.mkdir()
    marker.write_text("running or failed\n", encoding="utf-8")
    assert marker == tmp_path / "executed" / "replicates.incomplete"
    assert not replicates_complete(tmp_path, [42, 43])
