"""A stored checkpoint downloads on first use, whole (nested files keep their folders)."""

from __future__ import annotations

import os

from kubetune.local.stored_checkpoint import StoredCheckpoint
from kubetune.storage import open_storage


def test_a_stored_checkpoint_downloads_once_with_its_tree(tmp_path):
    stored = tmp_path / "bucket" / "exp" / "trial" / "checkpoint_000001"
    (stored / "model" / "layers").mkdir(parents=True)
    (stored / "model" / "layers" / "w.bin").write_bytes(b"weights")
    (stored / "state.json").write_text('{"i": 1}')
    staged = tmp_path / "staging" / "checkpoint_000001"
    ckpt = StoredCheckpoint(str(stored), str(staged))
    assert not staged.exists()  # nothing downloaded yet
    assert repr(ckpt) == f"Checkpoint(uri={str(stored)!r})"
    out = ckpt.to_directory(str(tmp_path / "out"))
    assert (tmp_path / "out" / "model" / "layers" / "w.bin").read_bytes() == b"weights"
    with open(os.path.join(out, "state.json")) as f:
        assert f.read() == '{"i": 1}'
    with ckpt.as_directory() as d:
        assert d == str(staged) and (staged / "model" / "layers" / "w.bin").exists()


def test_get_directory_under_no_prefix_keeps_paths(tmp_path):
    store = open_storage(str(tmp_path / "s"))
    store.put_bytes("a/b/c.txt", b"x")
    store.put_bytes("top.txt", b"y")
    store.get_directory("", str(tmp_path / "out"))
    assert (tmp_path / "out" / "a" / "b" / "c.txt").read_bytes() == b"x"
    assert (tmp_path / "out" / "top.txt").read_bytes() == b"y"
