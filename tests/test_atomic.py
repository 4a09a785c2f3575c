import os

from ncaer.atomic import write_bytes


def test_write_bytes_leaves_no_temporary_file(tmp_path):
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    write_bytes(str(tmp_path / "a" / "b.bin"), b"data", str(tmp))
    assert (tmp_path / "a" / "b.bin").read_bytes() == b"data"
    assert os.listdir(tmp) == []
