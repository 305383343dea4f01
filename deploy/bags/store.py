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
import zlib
from collections.abc import Iterator, Sequence
from pathlib import Path

import yaml
from rosbags.interfaces import Nodetype, Qos, QosDurability, QosHistory, QosLiveliness, QosReliability, QosTime
from rosbags.rosbag2 import Reader, StoragePlugin, Writer, WriterError
from rosbags.typesys import Stores, get_typestore

from deploy.bags.topics import QosSpec, check_topics, joint_names_read, policy_inputs
from deploy.errors import ConfigError
from deploy.graph.description import TOPICS
from deploy.policies.base import PolicyMetadata

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


def _bag_time(ns: int) -> QosTime:
    return QosTime(ns // 1_000_000_000, ns % 1_000_000_000) if ns else _INFINITE


def _ns(time: QosTime) -> int:
    return 0 if (time.sec, time.nsec) == (_INFINITE.sec, _INFINITE.nsec) else time.sec * 1_000_000_000 + time.nsec


def qos_to_bag(spec: QosSpec) -> Qos:
    return Qos(QosHistory.KEEP_ALL if spec.keep_all else QosHistory.KEEP_LAST, spec.depth,
               QosReliability.RELIABLE if spec.reliable else QosReliability.BEST_EFFORT,
               QosDurability.TRANSIENT_LOCAL if spec.transient_local else QosDurability.VOLATILE,
               _bag_time(spec.deadline_ns), _bag_time(spec.lifespan_ns),
               QosLiveliness.MANUAL_BY_TOPIC if spec.manual_liveliness else QosLiveliness.AUTOMATIC,
               _bag_time(spec.liveliness_lease_ns), False)


def qos_from_bag(qos: Qos) -> QosSpec:
    """A recorded offer; system-default policies read as rmw's defaults (reliable, volatile, keep-last)."""
    return QosSpec(reliable=qos.reliability != QosReliability.BEST_EFFORT,
                   transient_local=qos.durability == QosDurability.TRANSIENT_LOCAL,
                   depth=max(1, int(qos.depth)), keep_all=qos.history == QosHistory.KEEP_ALL,
                   deadline_ns=_ns(qos.deadline), lifespan_ns=_ns(qos.lifespan),
                   manual_liveliness=qos.liveliness == QosLiveliness.MANUAL_BY_TOPIC,
                   liveliness_lease_ns=_ns(qos.liveliness_lease_duration))


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
    """An existing rosbag2 (directory with metadata.yaml, or a lone .mcap), MCAP or sqlite3 storage; every
    failure is one line naming the bag (and, for a damaged MCAP, the byte offset where it breaks)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not self.path.exists():
            raise ConfigError(f"bag '{self.path}' does not exist")
        if self.path.is_dir():
            _check_metadata(self.path)
        try:
            self._reader = Reader(self.path)
            self._reader.open()
        except Exception as error:  # noqa: BLE001  (whatever a damaged file makes rosbags raise)
            raise self._damaged(error) from None
        self.topics: dict[str, TopicInfo] = {}
        for conn in self._reader.connections:
            qos = getattr(conn.ext, "offered_qos_profiles", [])
            self.topics[conn.topic] = TopicInfo(conn.topic, conn.msgtype, conn.msgcount,
                                                tuple(qos_from_bag(q) for q in qos), conn.digest or "")
        self.start_ns, self.end_ns = self._reader.start_time, self._reader.end_time
        self.custom: dict[str, str] = dict(self._reader.storage.metadata.custom or {})  # metadata custom_data

    def _files(self) -> list[Path]:
        if self.path.is_dir():
            return sorted(p for p in self.path.iterdir() if p.suffix in (".mcap", ".db3"))
        return [self.path]

    def _damaged(self, error: Exception) -> BagError:
        """The one-line error for a bag rosbags could not read: where an MCAP breaks, if it can be found, else
        what rosbags said (e.g. a metadata key that is missing)."""
        for file in self._files():
            damage = mcap_damage(file) if file.suffix == ".mcap" else None
            if damage is not None:
                offset, state, why = damage
                return BagError(f"bag '{self.path}': {file} is {state} at offset {offset} ({why})")
        return BagError(f"bag '{self.path}' is unreadable: {_one_line(error)}")

    @property
    def types(self) -> dict[str, str]:
        return {t.name: t.msgtype for t in self.topics.values()}

    def messages(self, topics: Sequence[str] | None = None, start_ns: int | None = None,
                 stop_ns: int | None = None) -> Iterator[tuple[str, int, bytes]]:
        """(topic, log time [ns], CDR bytes) in log-time order, log times in [start_ns, stop_ns); a damaged file
        fails naming the bag."""
        conns = [c for c in self._reader.connections if topics is None or c.topic in topics]
        if not conns:
            return
        try:
            for conn, log_ns, data in self._reader.messages(conns, start=start_ns, stop=stop_ns):
                yield conn.topic, log_ns, data
        except Exception as error:  # noqa: BLE001  (a damaged chunk makes rosbags raise anything: OverflowError...)
            raise self._damaged(error) from None

    def close(self) -> None:
        self._reader.close()

    def __enter__(self) -> BagReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _one_line(error: Exception) -> str:
    return " ".join(str(error).split()) or type(error).__name__


def _check_metadata(path: Path) -> None:
    """BagError in one line when a bag directory's metadata.yaml is missing or not rosbag2 metadata (rosbags
    would print the YAML parser's multi-line report)."""
    metadata = path / "metadata.yaml"
    if not metadata.is_file():
        files = ", ".join(str(p) for p in sorted(path.glob("*.mcap"))) or "no .mcap file either"
        raise BagError(f"bag '{path}' has no metadata.yaml (was its recorder killed?): {files}")
    try:
        document = yaml.safe_load(metadata.read_text())
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        raise BagError(f"bag '{path}': {metadata} is not valid YAML{where}") from None
    except (OSError, UnicodeDecodeError) as error:
        raise BagError(f"bag '{path}': {metadata} cannot be read ({error})") from None
    if not (isinstance(document, dict) and isinstance(document.get("rosbag2_bagfile_information"), dict)):
        raise BagError(f"bag '{path}': {metadata} is not rosbag2 metadata (no rosbag2_bagfile_information "
                       "mapping)")


# MCAP framing (https://mcap.dev/spec): magic, then records of opcode (uint8), length (uint64 LE), content.
_MCAP_MAGIC = b"\x89MCAP0\r\n"
_CHUNK, _DATA_END, _MAX_OPCODE = 0x06, 0x0F, 0x0F


def mcap_damage(file: Path) -> tuple[int, str, str] | None:
    """(byte offset, "corrupt" | "truncated", why) of the first MCAP record that does not parse: a bad opcode, a
    length running past its container, an uncompressed chunk whose records or CRC do not add up; None when
    the framing is sound (the damage, if any, is elsewhere)."""
    data = file.read_bytes()
    if data[:8] != _MCAP_MAGIC:
        return 0, "corrupt", "no MCAP magic"
    truncated = not data.endswith(_MCAP_MAGIC)
    offset = 8
    while offset < len(data) - (0 if truncated else 8):
        opcode = data[offset]
        if offset + 9 > len(data):
            return offset, "truncated", "the file ends inside a record"
        (length,) = struct.unpack_from("<Q", data, offset + 1)
        end = offset + 9 + length
        if opcode == 0 or _MAX_OPCODE < opcode < 0x80:  # 0x80-0xff: private records
            return offset, "corrupt", f"record opcode 0x{opcode:02x}"
        if end > len(data):
            return offset, "truncated" if truncated else "corrupt", "a record runs past the end of the file"
        if opcode == _CHUNK:
            damage = _chunk_damage(data, offset + 9, end)
            if damage is not None:
                return damage
        if opcode == _DATA_END:  # the messages are all there; the summary after them may be cut short
            return (len(data), "truncated", "the file ends inside its summary") if truncated else None
        offset = end
    return (offset, "truncated", "no MCAP footer") if truncated else None


def _chunk_damage(data: bytes, start: int, end: int) -> tuple[int, str, str] | None:
    """Damage inside a chunk record's content data[start:end]: its header, CRC, and (uncompressed) records."""
    try:
        _, _, size, crc, name_len = struct.unpack_from("<QQQII", data, start)
        compression = data[start + 32:start + 32 + name_len]
        (records_len,) = struct.unpack_from("<Q", data, start + 32 + name_len)
    except struct.error:
        return start - 9, "corrupt", "chunk header"
    first = start + 40 + name_len
    if first + records_len != end:
        return start - 9, "corrupt", "chunk length"
    if compression:
        return None  # compressed records: rosbags' decompressor reports what is wrong
    if size != records_len or (crc and zlib.crc32(data[first:end]) != crc):
        return start - 9, "corrupt", "chunk CRC mismatch"
    offset = first
    while offset < end:
        if offset + 9 > end:
            return offset, "corrupt", "a record runs past its chunk"
        (length,) = struct.unpack_from("<Q", data, offset + 1)
        if not 0 < data[offset] <= _MAX_OPCODE:
            return offset, "corrupt", f"record opcode 0x{data[offset]:02x}"
        if offset + 9 + length > end:
            return offset, "corrupt", "a record runs past its chunk"
        offset += 9 + length
    return None


def check_policy_inputs(reader: BagReader, metadata: PolicyMetadata, why: str) -> None:
    """ConfigError naming every input topic of a policy the bag lacks (or holds with another type or
    definition), and the joints its JointState lacks (first message: a width read from no joint is NaN)."""
    inputs = policy_inputs(metadata)
    check_topics(str(reader.path), reader.types, inputs.topics, why)
    check_type_definitions(reader, list(inputs.topics))
    wanted = joint_names_read(metadata)
    if not wanted:
        return
    topic = TOPICS["joint_states"]
    first = next(reader.messages([topic]), None)
    if first is None:
        raise ConfigError(f"bag '{reader.path}': topic {topic} has no message ({why} reads {', '.join(wanted)})")
    names = list(typestore().deserialize_cdr(first[2], reader.types[topic]).name)
    for key, needed in wanted.items():
        missing = [n for n in needed if n not in names]
        if missing:
            raise ConfigError(f"bag '{reader.path}': topic {topic} has no joint named "
                              f"{', '.join(repr(n) for n in missing)} ({why} reads {key} from it); its joints: "
                              f"{', '.join(names) or 'none'}")


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


__all__ = ["BagError", "BagReader", "BagWriter", "TopicInfo", "check_policy_inputs", "check_type_definitions",
           "default_bag_path", "has_stamp", "known_type", "mcap_damage", "qos_from_bag", "qos_to_bag", "stamp_ns",
           "type_hash", "typestore", "with_stamp_shifted"]
