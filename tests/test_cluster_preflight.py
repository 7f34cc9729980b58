"""Object-store URIs are refused before anything is created; the cluster preflight checks, from a Ray task on
each node type, that the sweep folder is shared and the data exist (real local Ray, one node)."""

import secrets

import pytest

from sourcetrace.cli import main
from sourcetrace.errors import StorageError
from sourcetrace.nodecheck import _probe, check_nodes
from sourcetrace.storage import local_path


@pytest.mark.parametrize("command", [["sweep", "sweeps/demo.py", "--root", "data"], ["report", "s3://bucket/x/demo"]])
def test_s3_storage_never_becomes_a_local_folder(command, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    argv = command + (["--storage", "s3://bucket/x"] if command[0] == "sweep" else [])
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "s3://bucket/x" in err and "s3:// storage is not supported" in err and "mount" in err
    assert list(tmp_path.iterdir()) == []  # no ./s3:/bucket/x


def test_file_uris_and_plain_paths_are_local(tmp_path):
    assert local_path(tmp_path.as_uri() + "/r%20s", "--storage") == tmp_path / "r s"
    assert local_path("ray_results", "--storage").name == "ray_results"
    with pytest.raises(StorageError, match="--out gs://b/r: gs:// storage is not supported"):
        local_path("gs://b/r", "--out")


def test_a_node_without_the_marker_or_the_data_names_both(tmp_path):
    token = secrets.token_hex(4)
    marker = tmp_path / "sweep" / ".node-check-x"
    _, problems = _probe(str(marker), token, [("data.root", str(tmp_path / "nowhere")), ("data.protocol", "")])
    assert problems[0].startswith(f"--storage {marker.parent} is not shared: the driver's marker file is missing")
    assert problems[1] == f"data.root {tmp_path / 'nowhere'} does not exist on this node" and len(problems) == 2
    marker.parent.mkdir()
    marker.write_text("another")
    assert "holds another marker" in _probe(str(marker), token, [])[1][0]


def test_preflight_on_local_ray_passes_then_names_a_missing_data_root(tiny_corpus, tmp_path):
    import ray

    from sourcetrace.localray import loopback_only

    loopback_only()
    ray.init(num_cpus=1, include_dashboard=False, logging_level="WARNING")
    try:
        assert check_nodes(tmp_path / "sweep", str(tiny_corpus)) == 1
        with pytest.raises(StorageError, match=r"node [\d.]+: data.root /no/such/corpus does not exist on this node"):
            check_nodes(tmp_path / "sweep", "/no/such/corpus")
    finally:
        ray.shutdown()
    assert list((tmp_path / "sweep").iterdir()) == []  # the marker is removed
