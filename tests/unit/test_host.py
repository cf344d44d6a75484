"""The host's mounts and network as PID 1 sees them, as node_exporter reads them."""

from pathlib import Path

from kato_exporter.sources.host import read_mounts, read_network

NET_DEV = """Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop ...
    lo: 1000 10 0 0 0 0 0 0 1000 10 0 0 0 0 0 0
  eth0: 123456 100 0 0 0 0 0 0 654321 200 0 0 0 0 0 0
"""


def write(root: Path, pid: str, name: str, text: str) -> None:
    (root / pid / name).parent.mkdir(parents=True, exist_ok=True)
    (root / pid / name).write_text(text)


def test_pid_1_is_read_before_self(tmp_path: Path) -> None:
    write(tmp_path, "1", "net/dev", NET_DEV)
    write(tmp_path, "self", "net/dev", NET_DEV.replace("eth0", "veth1"))
    write(tmp_path, "1", "mounts", "/dev/vda1 / ext4 rw 0 0\nnfs:/x /mnt/with\\040space nfs rw 0 0\n")
    write(tmp_path, "self", "mounts", "overlay / overlay rw 0 0\n")
    assert read_network(str(tmp_path)) == {"lo": (1000, 1000), "eth0": (123456, 654321)}
    assert read_mounts(str(tmp_path)) == [("/", "ext4"), ("/mnt/with space", "nfs")]


def test_self_when_pid_1_is_closed(tmp_path: Path) -> None:
    write(tmp_path, "self", "net/dev", NET_DEV)
    assert read_network(str(tmp_path))["eth0"] == (123456, 654321)
    assert read_mounts(str(tmp_path / "nowhere")) == []
