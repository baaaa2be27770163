"""Reading and writing bags with ``rosbags`` (no ROS installation): rosbag2 (sqlite3, mcap) and ROS 1.

A rosbag2 whose recorder died before writing ``metadata.yaml`` (or a bare ``.db3``/``.mcap`` file) is read from a
copy in a temporary directory: the copy's sqlite ``topics`` table is reindexed to the current type-name layout
(``sensor_msgs/Image`` -> ``sensor_msgs/msg/Image``, as written by pre-Foxy recorders), so the user's bag is never
modified.
"""

from __future__ import annotations

import contextlib
import shutil
import sqlite3
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from rosbags.highlevel import AnyReader, AnyReaderError
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore
from rosbags.typesys.store import Typestore

from mgcda_core.errors import DataError, shorten
from mgcda_ros.conversions import ImageFields

IMAGE = "sensor_msgs/msg/Image"
COMPRESSED = "sensor_msgs/msg/CompressedImage"
STORAGE_SUFFIXES = (".db3", ".mcap")
#: messages are (de)serialised with the ROS 2 Kilted definitions when a bag carries none.
TYPESTORE_NAME = Stores.ROS2_KILTED


class BagError(DataError):
    """A bag or topic that cannot be used; the message says what the bag has instead."""


def typestore() -> Typestore:
    return get_typestore(TYPESTORE_NAME)


class BagReader:
    """An open bag: topic listing, topic checks and deserialised messages."""

    def __init__(self, reader: AnyReader, path: Path) -> None:
        self._reader = reader
        self.path = path

    def topics(self) -> dict[str, tuple[str, int]]:
        """topic -> (message type, message count)."""
        return {name: (info.msgtype or "?", info.msgcount) for name, info in self._reader.topics.items()}

    def describe_topics(self) -> str:
        rows = [f"  {name}  [{msgtype}, {count} msgs]" for name, (msgtype, count) in sorted(self.topics().items())]
        return "\n".join(rows) if rows else "  (no topics)"

    def require_topic(self, topic: str, allowed_types: tuple[str, ...], role: str) -> str:
        """Check that ``topic`` exists with one of ``allowed_types`` and has messages; return its type."""
        topics = self.topics()
        problem = None
        if topic not in topics:
            problem = f"{role} topic {topic!r} is not in the bag"
        elif topics[topic][0] not in allowed_types:
            problem = f"{role} topic {topic!r} has type {topics[topic][0]}, expected {' or '.join(allowed_types)}"
        elif topics[topic][1] == 0:
            problem = f"{role} topic {topic!r} has no messages"
        if problem:
            raise BagError(f"{problem}. Bag {self.path} has these topics:\n{self.describe_topics()}")
        return topics[topic][0]

    def count(self, topic: str) -> int:
        return self.topics()[topic][1]

    def messages(self, topics: list[str]) -> Iterator[tuple[str, int, Any]]:
        """(topic, bag timestamp ns, deserialised message) for ``topics``, in bag time order."""
        connections = [c for c in self._reader.connections if c.topic in topics]
        with _damage_named(self.path):
            for connection, timestamp, raw in self._reader.messages(connections=connections):
                yield connection.topic, timestamp, self._reader.deserialize(raw, connection.msgtype)


@contextlib.contextmanager
def open_bag(path: str | Path) -> Iterator[BagReader]:
    """Open a ROS 1 ``.bag``, a rosbag2 directory, or rosbag2 storage without ``metadata.yaml``."""
    path = Path(path)
    if not path.exists():
        raise BagError(f"bag not found: {path} (expected a ROS 1 .bag file, a rosbag2 directory, or a .db3/.mcap file)")
    with contextlib.ExitStack() as stack:
        with _damage_named(path):
            if path.is_dir() and (path / "metadata.yaml").is_file() or path.suffix == ".bag":
                paths = [path]
            else:
                tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="mgcda_bag_")))
                paths = _reindexed_copy(path, tmp)
            reader = AnyReader(paths, default_typestore=typestore())
            stack.enter_context(reader)
        yield BagReader(reader, path)


@contextlib.contextmanager
def _damage_named(path: Path) -> Iterator[None]:
    """A truncated or corrupt bag (sqlite, mcap or rosbags errors) becomes a BagError naming it."""
    try:
        yield
    except (AnyReaderError, sqlite3.DatabaseError, EOFError) as err:
        raise BagError(f"cannot read bag {path} (truncated or damaged?): {type(err).__name__}: "
                       f"{shorten(str(err))}") from None


def _reindexed_copy(path: Path, tmp: Path) -> list[Path]:
    """Copy rosbag2 storage files (a bare file, or a directory without metadata.yaml) and fix legacy type names."""
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix in STORAGE_SUFFIXES)
    else:
        files = [path] if path.suffix in STORAGE_SUFFIXES else []
    if not files:
        raise BagError(f"{path} is not a bag: expected a ROS 1 .bag file, a rosbag2 directory with metadata.yaml, "
                       f"or rosbag2 storage files ({', '.join(STORAGE_SUFFIXES)})")
    copies = []
    for source in files:
        copy = tmp / source.name
        shutil.copyfile(source, copy)
        if copy.suffix == ".db3":
            _normalise_sqlite_types(copy)
        copies.append(copy)
    return copies


def _normalise_sqlite_types(db: Path) -> None:
    """Rewrite 'pkg/Type' to 'pkg/msg/Type' in a copied rosbag2 sqlite3 file (pre-Foxy recorders wrote the former)."""
    with contextlib.closing(sqlite3.connect(db)) as connection, connection:
        rows = connection.execute("SELECT id, type FROM topics").fetchall()
        for topic_id, msgtype in rows:
            parts = msgtype.split("/")
            if len(parts) == 2:
                connection.execute("UPDATE topics SET type = ? WHERE id = ?", (f"{parts[0]}/msg/{parts[1]}", topic_id))


def stamp_ns(msg: Any) -> int:
    """Header stamp of a message in nanoseconds (ROS 1 and ROS 2 messages alike)."""
    return int(msg.header.stamp.sec) * 1_000_000_000 + int(msg.header.stamp.nanosec)


class BagWriter:
    """Writes Image/CompressedImage topics to a new rosbag2 (mcap or sqlite3), atomically: it is written in a
    temporary sibling directory and renamed into place on close, so a crash never leaves half a bag."""

    def __init__(self, path: str | Path, topics: dict[str, str], storage: str = "mcap") -> None:
        self.path = Path(path)
        if self.path.exists():
            raise BagError(f"output bag {self.path} already exists: choose a new path (bags are never overwritten)")
        plugins = {"mcap": StoragePlugin.MCAP, "sqlite3": StoragePlugin.SQLITE3}
        if storage not in plugins:
            raise BagError(f"unknown bag storage {storage!r}: expected one of {sorted(plugins)}")
        unknown = {t: m for t, m in topics.items() if m not in (IMAGE, COMPRESSED)}
        if unknown:
            raise BagError(f"cannot write topics {unknown}: expected types {IMAGE} or {COMPRESSED}")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._tmp = Path(tempfile.mkdtemp(prefix=f".{self.path.name}.", dir=self.path.parent)) / self.path.name
        self._store = typestore()
        self._writer = Writer(self._tmp, version=9, storage_plugin=plugins[storage])
        self._writer.open()
        self._connections = {t: self._writer.add_connection(t, m, typestore=self._store) for t, m in topics.items()}
        self._types = topics

    def _header(self, stamp: int, frame_id: str) -> Any:
        types = self._store.types
        time_msg = types["builtin_interfaces/msg/Time"](sec=stamp // 1_000_000_000, nanosec=stamp % 1_000_000_000)
        return types["std_msgs/msg/Header"](stamp=time_msg, frame_id=frame_id)

    def _write(self, topic: str, msgtype: str, timestamp: int, msg: Any) -> None:
        if self._types.get(topic) != msgtype:
            raise BagError(f"topic {topic!r} was opened as {self._types.get(topic)}, not {msgtype}")
        self._writer.write(self._connections[topic], timestamp, self._store.serialize_cdr(msg, msgtype))

    def write_image(self, topic: str, timestamp: int, stamp: int, frame_id: str, fields: ImageFields) -> None:
        """One Image at bag time ``timestamp`` (ns) with header stamp ``stamp`` (ns) and ``frame_id``."""
        msg = self._store.types[IMAGE](header=self._header(stamp, frame_id), height=fields.height, width=fields.width,
                                       encoding=fields.encoding, is_bigendian=fields.is_bigendian, step=fields.step,
                                       data=fields.data)
        self._write(topic, IMAGE, timestamp, msg)

    def write_compressed(self, topic: str, timestamp: int, stamp: int, frame_id: str, fmt: str, data: bytes) -> None:
        """One CompressedImage (``fmt`` e.g. "jpeg") at bag time ``timestamp`` with header stamp ``stamp``."""
        msg = self._store.types[COMPRESSED](header=self._header(stamp, frame_id), format=fmt,
                                            data=np.frombuffer(data, dtype=np.uint8))
        self._write(topic, COMPRESSED, timestamp, msg)

    def close(self) -> None:
        self._writer.close()
        self._tmp.rename(self.path)
        self._tmp.parent.rmdir()

    def abort(self) -> None:
        with contextlib.suppress(Exception):
            self._writer.close()
        shutil.rmtree(self._tmp.parent, ignore_errors=True)

    def __enter__(self) -> BagWriter:
        return self

    def __exit__(self, exc_type: Any, *_: Any) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()
