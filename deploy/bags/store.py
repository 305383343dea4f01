"""Rosbag2 MCAP files through the pure-Python `rosbags` package: write, read, and header stamps of raw CDR.

Bags are rosbag2 version 9 with MCAP storage and kilted message definitions, so `ros2 bag info/play` and
Foxglove open them. Messages stay serialized (CDR bytes) end to end: the recorder writes what DDS delivered and
the replay publishes the same bytes. Stamps are read (and shifted for looped replays) straight from the bytes:
a message whose first field is a std_msgs/Header (or a builtin_interfaces/Time) carries its stamp at bytes
4..12, after the 4-byte CDR encapsulation header.
"""
from __future__ import annotations

import dataclasses
import datetime
import functools
import struct
from collections.abc import Iterator, Sequence
from pathlib import Path

from rosbags.interfaces import Nodetype, Qos, QosDurability, QosHistory, QosLiveliness, QosReliability, QosTime
from rosbags.rosbag2 import Reader, ReaderError, StoragePlugin, Writer, WriterError
from rosbags.typesys import Stores, get_typestore

from deploy.bags.topics import QosSpec
from deploy.errors import ConfigError

BAG_VERSION = 9
BAGS_DIR = Path("runs/bags")  # where recordings go unless an output directory is given
TIME_TYPE = "builtin_interfaces/msg/Time"
_INFINITE = QosTime(9223372036, 854775807)  # rmw's "infinite" duration, as rosbag2 writes it
_STAMP = slice(4, 12)  # CDR: 4-byte encapsulation header, then int32 sec, uint32 nanosec


class BagError(ConfigError):
    """A bag cannot be read or written (bad input, like a bad parameter file); the message names the bag and
    the file inside it."""


@functools.cache
def typestore():
    """The kilted message definitions (the rclpy wheels here are kilted)."""
    return get_typestore(Stores.ROS2_KILTED)


def known_type(msgtype: str) -> bool:
    return msgtype in typestore().fielddefs


def type_hash(msgtype: str) -> str:
    """RIHS01 hash of the kilted definition (compare with a publisher's or a bag's)."""
    return typestore().hash_rihs01(msgtype)


@functools.cache
def has_stamp(msgtype: str) -> bool:
    """Whether the message starts with a Time (directly or as the first field of its first field)."""
    store = typestore()
    while msgtype != TIME_TYPE:
        fields = store.fielddefs.get(msgtype, ((), ()))[1]
        if not fields or fields[0][1][0] != Nodetype.NAME:
            return False
        msgtype = fields[0][1][1]
    return True


def _stamp_format(data: bytes | memoryview) -> str:
    return "<iI" if data[1] & 1 else ">iI"  # encapsulation 0x0001 = CDR little endian, 0x0000 = big endian


def stamp_ns(data: bytes | memoryview) -> int:
    """Header stamp [ns] of a serialized message whose type `has_stamp`."""
    sec, nanosec = struct.unpack(_stamp_format(data), data[_STAMP])
    return sec * 1_000_000_000 + nanosec


def with_stamp_shifted(data: bytes | memoryview, shift_ns: int) -> bytes:
    """A copy of a serialized `has_stamp` message with its stamp moved by shift_ns."""
    data, total = bytes(data), stamp_ns(data) + shift_ns
    return data[:4] + struct.pack(_stamp_format(data), total // 1_000_000_000, total % 1_000_000_000) + data[12:]


def qos_to_bag(spec: QosSpec) -> Qos:
    return Qos(QosHistory.KEEP_LAST, spec.depth,
               QosReliability.RELIABLE if spec.reliable else QosReliability.BEST_EFFORT,
               QosDurability.TRANSIENT_LOCAL if spec.transient_local else QosDurability.VOLATILE,
               _INFINITE, _INFINITE, QosLiveliness.AUTOMATIC, _INFINITE, False)


def qos_from_bag(qos: Qos) -> QosSpec:
    return QosSpec(reliable=qos.reliability == QosReliability.RELIABLE,
                   transient_local=qos.durability == QosDurability.TRANSIENT_LOCAL,
                   depth=max(1, int(qos.depth)))


def default_bag_path(now: datetime.datetime) -> Path:
    """runs/bags/<UTC date-time>, e.g. runs/bags/20250101-120000 (relative to the working directory)."""
    return BAGS_DIR / now.astimezone(datetime.timezone.utc).strftime("%Y%m%d-%H%M%S")


class BagWriter:
    """A new rosbag2 MCAP directory; `close()` writes the MCAP summary and metadata.yaml."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if self.path.exists():
            raise ConfigError(f"bag '{self.path}' exists already (choose a new output directory)")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._writer = Writer(self.path, version=BAG_VERSION, storage_plugin=StoragePlugin.MCAP)
        self._writer.open()
        self._connections: dict[str, object] = {}
        self.counts: dict[str, int] = {}

    def add_topic(self, topic: str, msgtype: str, offered_qos: Sequence[QosSpec] = ()) -> None:
        if not known_type(msgtype):
            raise ConfigError(f"topic {topic}: message type '{msgtype}' is not a kilted message type the bag "
                              "can describe")
        self._connections[topic] = self._writer.add_connection(
            topic, msgtype, typestore=typestore(), offered_qos_profiles=[qos_to_bag(q) for q in offered_qos])
        self.counts[topic] = 0

    def set_custom(self, key: str, value: str) -> None:
        """A key/value in metadata.yaml's custom_data (provenance, e.g. the source bag)."""
        self._writer.set_custom_data(key, value)

    def __contains__(self, topic: str) -> bool:
        return topic in self._connections

    def write(self, topic: str, log_time_ns: int, data: bytes | memoryview) -> None:
        self._writer.write(self._connections[topic], int(log_time_ns), data)
        self.counts[topic] += 1

    def close(self) -> None:
        try:
            self._writer.close()
        except WriterError as error:
            raise BagError(f"bag '{self.path}': could not be closed ({error})") from None

    def __enter__(self) -> BagWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


@dataclasses.dataclass(frozen=True)
class TopicInfo:
    name: str
    msgtype: str
    count: int
    offered_qos: tuple[QosSpec, ...]
    type_hash: str  # RIHS01 of the definition the bag carries ("" when the bag has none)


class BagReader:
    """An existing rosbag2 (directory with metadata.yaml, or a lone .mcap); every failure names the bag."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not self.path.exists():
            raise ConfigError(f"bag '{self.path}' does not exist")
        if self.path.is_dir() and not (self.path / "metadata.yaml").is_file():
            files = ", ".join(str(p) for p in sorted(self.path.glob("*.mcap"))) or "no .mcap file either"
            raise BagError(f"bag '{self.path}' has no metadata.yaml (was its recorder killed?): {files}")
        try:
            self._reader = Reader(self.path)
            self._reader.open()
        except (ReaderError, OSError, KeyError, ValueError, struct.error) as error:
            raise BagError(f"bag '{self.path}': {self._files()} is truncated or corrupt ({error})") from None
        self.topics: dict[str, TopicInfo] = {}
        for conn in self._reader.connections:
            qos = getattr(conn.ext, "offered_qos_profiles", [])
            self.topics[conn.topic] = TopicInfo(conn.topic, conn.msgtype, conn.msgcount,
                                                tuple(qos_from_bag(q) for q in qos), conn.digest or "")
        self.start_ns, self.end_ns = self._reader.start_time, self._reader.end_time
        self.custom: dict[str, str] = dict(self._reader.storage.metadata.custom or {})  # metadata custom_data

    def _files(self) -> str:
        if self.path.is_dir():
            return ", ".join(str(p) for p in sorted(self.path.glob("*.mcap"))) or str(self.path)
        return str(self.path)

    @property
    def types(self) -> dict[str, str]:
        return {t.name: t.msgtype for t in self.topics.values()}

    def messages(self, topics: Sequence[str] | None = None,
                 start_ns: int | None = None) -> Iterator[tuple[str, int, bytes]]:
        """(topic, log time [ns], CDR bytes) in log-time order; a file cut short fails naming the bag."""
        conns = [c for c in self._reader.connections if topics is None or c.topic in topics]
        if not conns:
            return
        try:
            for conn, log_ns, data in self._reader.messages(conns, start=start_ns):
                yield conn.topic, log_ns, data
        except (ReaderError, OSError, KeyError, ValueError, struct.error) as error:
            raise BagError(f"bag '{self.path}': {self._files()} is truncated or corrupt ({error})") from None

    def close(self) -> None:
        self._reader.close()

    def __enter__(self) -> BagReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def check_type_definitions(reader: BagReader, topics: Sequence[str]) -> None:
    """ConfigError when a bag's definition of a topic's type is not the kilted one (its bytes would not parse)."""
    for topic in topics:
        info = reader.topics[topic]
        if not known_type(info.msgtype):
            raise ConfigError(f"bag '{reader.path}': topic {topic} has type {info.msgtype}, which this ROS 2 "
                              "(kilted) does not know")
        if info.type_hash and info.type_hash != type_hash(info.msgtype):
            raise ConfigError(f"bag '{reader.path}': topic {topic}'s {info.msgtype} definition differs from "
                              f"kilted's ({info.type_hash} != {type_hash(info.msgtype)})")


__all__ = ["BagError", "BagReader", "BagWriter", "TopicInfo", "check_type_definitions", "default_bag_path", "has_stamp",
           "known_type", "qos_from_bag", "qos_to_bag", "stamp_ns", "type_hash", "typestore", "with_stamp_shifted"]
