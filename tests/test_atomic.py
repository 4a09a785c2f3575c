import os

import pandas as pd
import pytest

from ncaer.atomic import replace_with, write_bytes, write_csv


def test_write_bytes_leaves_no_temporary_file(tmp_path):
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    write_bytes(str(tmp_path / "a" / "b.bin"), b"data", str(tmp))
    assert (tmp_path / "a" / "b.bin").read_bytes() == b"data"
    assert os.listdir(tmp) == []


def test_a_failed_write_leaves_neither_the_file_nor_its_temporary(tmp_path):
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    with pytest.raises(TypeError):
        write_bytes(str(tmp_path / "a" / "b.bin"), "not bytes", str(tmp))  # fails inside the write
    assert not (tmp_path / "a" / "b.bin").exists() and os.listdir(tmp) == []


def test_a_table_written_halfway_keeps_the_previous_version(tmp_path):
    path = tmp_path / "t.csv"
    write_csv(pd.DataFrame({"x": [1, 2]}), path)

    def dies_halfway(p):
        with open(p, "w") as f:
            f.write("x\n3\n")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        replace_with(path, dies_halfway)
    assert pd.read_csv(path)["x"].tolist() == [1, 2]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.csv"]
