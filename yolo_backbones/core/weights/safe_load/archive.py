"""The container of a checkpoint: torch.save's zip archive (or the pre-1.6 stream), checked before anything is read.

:func:`open_archive` validates the zip directory of a ``torch.save`` file: stored (never compressed) members,
unique names under one top folder, no absolute or ``..`` names, each member's data inside the file and no two
members sharing bytes, the pickle under :data:`~.limits.MAX_PICKLE_BYTES`. A storage is read only when a
tensor uses it, and only if its declared size is exactly its member's size, so the bytes of all storages are
bounded by the file size. Tensors are always read to the CPU first.
"""
from __future__ import annotations

import io
import os
import struct
import zipfile
from typing import IO, Any, Callable

import torch

from . import limits
from .errors import Damaged, OverLimit, Refused
from .reader import read_pickle
from .records import Global, StorageRef

_LOCAL_HEADER = struct.Struct("<4sHHHHHIIIHH")
_LOCAL_MAGIC = b"PK\x03\x04"

# Storage class names (torch.FloatStorage, torch.cuda.HalfStorage, ...) -> element type
_STORAGE_DTYPES = {
    "DoubleStorage": torch.float64, "FloatStorage": torch.float32, "HalfStorage": torch.float16,
    "BFloat16Storage": torch.bfloat16, "LongStorage": torch.int64, "IntStorage": torch.int32,
    "ShortStorage": torch.int16, "CharStorage": torch.int8, "ByteStorage": torch.uint8, "BoolStorage": torch.bool,
    "ComplexFloatStorage": torch.complex64, "ComplexDoubleStorage": torch.complex128,
    "UntypedStorage": torch.uint8,
}
_STORAGE_MODULES = ("torch", "torch.cuda", "torch.storage")


def storage_dtype(cls: Any) -> torch.dtype:
    """The element type of a pickled storage class, or raise Refused."""
    if type(cls) is Global and cls.module in _STORAGE_MODULES and cls.name in _STORAGE_DTYPES:
        return _STORAGE_DTYPES[cls.name]
    raise Refused(getattr(cls, "path", None), "a tensor storage of the file names a type that is not a torch storage")


class Archive:
    """A validated checkpoint: its pickle program and a reader for each storage."""

    byteorder = "little"

    def __init__(self, name: str) -> None:
        self.name = name
        self.pickle: bytes = b""
        self.file_bytes = 0
        self.storage_bytes = 0  # bytes of the storages read so far
        self._storages: dict[str, torch.UntypedStorage] = {}
        self.max_bytes = limits.max_tensor_bytes()

    def read_records(self) -> Any:
        """Run the pickle program (records, see :mod:`.reader`)."""
        return read_pickle(self.pickle, self._persistent_load)[0]

    def _persistent_load(self, pid: Any) -> Any:
        if type(pid) is not tuple or not pid or pid[0] not in ("storage", b"storage") or len(pid) != 5:
            raise Damaged("a persistent id of the pickle is not a storage reference")
        _, cls, key, location, numel = pid
        if type(key) is not str or not _is_int(numel) or numel < 0 or type(location) is not str:
            raise Damaged("a storage reference of the pickle is malformed")
        return StorageRef(key, storage_dtype(cls), numel, location)

    def storage(self, ref: StorageRef) -> torch.UntypedStorage:
        """The bytes of storage ``ref`` (read once; later references share them)."""
        found = self._storages.get(ref.key)
        nbytes = ref.numel * torch._utils._element_size(ref.dtype)
        if found is None:
            found = self._read(ref.key, nbytes)
            self.storage_bytes += nbytes
            if self.storage_bytes > self.max_bytes:
                raise OverLimit("YOLO_BACKBONES_MAX_CHECKPOINT_MB", limits.max_tensor_bytes() >> 20,
                                "the size of its tensors (MB)")
            self._storages[ref.key] = found
        if found.nbytes() != nbytes:
            raise Damaged(f"storage {ref.key} is referenced with {nbytes} bytes but holds {found.nbytes()}")
        return found

    def _read(self, key: str, nbytes: int) -> torch.UntypedStorage:
        raise NotImplementedError

    def storage_budget(self) -> int:
        """Bytes of all storages the file holds (what a model rebuilt from it may be sized by)."""
        raise NotImplementedError

    def storage_count(self) -> int:
        """Number of storages the file holds."""
        raise NotImplementedError


class ZipArchive(Archive):
    """``torch.save``'s zip format (torch >= 1.6)."""

    def __init__(self, fh: IO[bytes], name: str, size: int) -> None:
        super().__init__(name)
        self.fh, self.file_bytes = fh, size
        self.members: dict[str, tuple[int, int]] = {}  # name -> (data offset, size)
        self.prefix = ""
        self._validate()

    def _validate(self) -> None:
        try:
            with zipfile.ZipFile(self.fh) as zf:
                infos = zf.infolist()
        except (zipfile.BadZipFile, OSError, EOFError, ValueError, KeyError, IndexError, struct.error) as e:
            raise Damaged(f"its zip directory cannot be read: {e}") from None
        if len(infos) > limits.MAX_ZIP_MEMBERS:
            raise OverLimit("MAX_ZIP_MEMBERS", limits.MAX_ZIP_MEMBERS, "the number of archive members")
        pkl = [i.filename for i in infos if i.filename.endswith("/data.pkl") and i.filename.count("/") == 1]
        if len(pkl) != 1:
            raise Damaged("it does not hold exactly one <folder>/data.pkl")
        self.prefix = pkl[0][: -len("data.pkl")]
        spans = []
        for info in infos:
            fname = info.filename
            parts = fname.split("/")
            if not fname.startswith(self.prefix) or "\\" in fname or any(p in ("", ".", "..") for p in parts[1:]) \
                    or fname.startswith("/"):
                raise Refused(None, f"the archive holds the member name {fname[:80]!r}, which torch.save never "
                                    "writes (outside its folder, absolute or with '..')")
            if fname in self.members:
                raise Refused(None, f"the archive holds the member {fname[:80]!r} twice")
            if info.compress_type != zipfile.ZIP_STORED or info.compress_size != info.file_size:
                raise Refused(None, f"the archive member {fname[:80]!r} is compressed; torch.save stores members "
                                    "uncompressed, and a compressed member can expand far beyond the file size")
            if info.flag_bits & 0x1:
                raise Refused(None, f"the archive member {fname[:80]!r} is encrypted")
            offset = self._data_offset(info)
            if offset + info.file_size > self.file_bytes:
                raise Damaged("a record ends past the end of the file (truncated)")
            self.members[fname] = (offset, info.file_size)
            spans.append((info.header_offset, offset + info.file_size, fname))
        spans.sort()
        for (_, end, a), (start, _, b) in zip(spans, spans[1:]):
            if start < end:
                raise Refused(None, f"the archive members {a[:60]!r} and {b[:60]!r} share bytes, which torch.save "
                                    "never writes (it would let a small file hold large tensors)")
        offset, size = self.members[pkl[0]]
        if size > limits.MAX_PICKLE_BYTES:
            raise OverLimit("MAX_PICKLE_BYTES", limits.MAX_PICKLE_BYTES, f"its pickle ({size} bytes)")
        self.pickle = self._bytes(offset, size)
        order = self.members.get(self.prefix + "byteorder")
        if order is not None:
            text = self._bytes(*order)
            if text not in (b"little", b"big"):
                raise Damaged("its byteorder record is neither 'little' nor 'big'")
            self.byteorder = text.decode()

    def storage_budget(self) -> int:
        return sum(size for name, (_, size) in self.members.items() if name.startswith(self.prefix + "data/"))

    def storage_count(self) -> int:
        return sum(name.startswith(self.prefix + "data/") for name in self.members)

    def _data_offset(self, info: zipfile.ZipInfo) -> int:
        self.fh.seek(info.header_offset)
        head = self.fh.read(_LOCAL_HEADER.size)
        if len(head) != _LOCAL_HEADER.size:
            raise Damaged("a local zip header ends past the end of the file (truncated)")
        magic, _, flags, method, *_, name_len, extra_len = _LOCAL_HEADER.unpack(head)
        if magic != _LOCAL_MAGIC or method != zipfile.ZIP_STORED:
            raise Refused(None, f"the local header of member {info.filename[:80]!r} does not match the zip "
                                "directory (a crafted archive)")
        name = self.fh.read(name_len)
        if name.decode("utf-8" if flags & 0x800 else "cp437", "replace") != info.filename:
            raise Refused(None, f"the local header of member {info.filename[:80]!r} names another file")
        return info.header_offset + _LOCAL_HEADER.size + name_len + extra_len

    def _bytes(self, offset: int, size: int) -> bytes:
        self.fh.seek(offset)
        data = self.fh.read(size)
        if len(data) != size:
            raise Damaged("a record ends past the end of the file (truncated)")
        return data

    def _read(self, key: str, nbytes: int) -> torch.UntypedStorage:
        member = self.members.get(f"{self.prefix}data/{key}")
        if member is None:
            raise Damaged(f"the storage record data/{key} is missing")
        offset, size = member
        if size != nbytes:
            raise Damaged(f"storage data/{key} declares {nbytes} bytes but its record holds {size}")
        buf = torch.empty(nbytes, dtype=torch.uint8)
        if nbytes:
            self.fh.seek(offset)
            view = memoryview(buf.numpy())
            got = self.fh.readinto(view) if hasattr(self.fh, "readinto") else None
            if got is None:
                chunk = self.fh.read(nbytes)
                got = len(chunk)
                view[:got] = chunk
            if got != nbytes:
                raise Damaged(f"storage data/{key} ends past the end of the file (truncated)")
        return buf.untyped_storage()


class LegacyArchive(Archive):
    """torch < 1.6's stream format: magic, protocol and system pickles, the object pickle, keys, then storages."""

    def __init__(self, fh: IO[bytes], name: str, size: int) -> None:
        super().__init__(name)
        self.file_bytes = size
        data = fh.read()
        self._data = data
        pos = 0
        for _ in range(3):  # magic number, protocol version, system info: plain values
            _, pos = read_pickle(self._data, _no_persistent, pos)
        self._main_at = pos
        self._records: dict[str, StorageRef] = {}
        self._root, pos = read_pickle(self._data, self._legacy_persistent, pos)
        keys, pos = read_pickle(self._data, _no_persistent, pos)
        if type(keys) is not list or not all(type(k) is str for k in keys):
            raise Damaged("its storage key list is malformed")
        self._offsets: dict[str, tuple[int, int]] = {}
        for key in keys:
            ref = self._records.get(key)
            if ref is None:
                raise Damaged(f"its storage {key} is not referenced by the object pickle")
            if pos + 8 > len(data):
                raise Damaged("a storage ends past the end of the file (truncated)")
            numel = int.from_bytes(data[pos:pos + 8], "little", signed=True)
            nbytes = numel * torch._utils._element_size(ref.dtype)
            if numel != ref.numel or pos + 8 + nbytes > len(data):
                raise Damaged(f"storage {key} is truncated or its size does not match its reference")
            self._offsets[key] = (pos + 8, nbytes)
            pos += 8 + nbytes

    def read_records(self) -> Any:
        return self._root

    def storage_budget(self) -> int:
        return sum(size for _, size in self._offsets.values())

    def storage_count(self) -> int:
        return len(self._offsets)

    def _legacy_persistent(self, pid: Any) -> Any:
        if type(pid) is tuple and pid and pid[0] in ("module", b"module") and len(pid) >= 2:
            return pid[1]  # torch < 1.6 names a module class once this way (with its source, only compared)
        if type(pid) is not tuple or len(pid) != 6 or pid[0] not in ("storage", b"storage"):
            raise Damaged("a persistent id of the pickle is not a storage reference")
        _, cls, key, location, numel, view = pid
        if view is not None:
            raise Refused(None, "the file uses legacy storage views, which this loader does not read")
        if type(key) is not str or not _is_int(numel) or numel < 0 or type(location) is not str:
            raise Damaged("a storage reference of the pickle is malformed")
        ref = self._records.get(key)
        if ref is None:
            ref = self._records[key] = StorageRef(key, storage_dtype(cls), numel, location)
        return ref

    def _read(self, key: str, nbytes: int) -> torch.UntypedStorage:
        offset, size = self._offsets.get(key, (0, -1))
        if size != nbytes:
            raise Damaged(f"storage {key} is missing or has the wrong size")
        buf = torch.empty(nbytes, dtype=torch.uint8)
        if nbytes:
            memoryview(buf.numpy())[:] = memoryview(self._data)[offset:offset + nbytes]
        return buf.untyped_storage()


def _no_persistent(pid: Any) -> Any:
    raise Damaged("a header pickle refers to a storage")


def _is_int(x: Any) -> bool:
    return type(x) is int


def open_archive(f: Any, kind: str | None, name: str) -> tuple[Archive, Callable[[], None]]:
    """Open ``f`` (a path or binary file object) as a checkpoint of ``kind`` (``'zip'`` / ``'legacy'`` / None:
    from its first bytes).

    Returns the archive and a function that closes what was opened here.
    """
    if isinstance(f, (str, os.PathLike)):
        fh: IO[bytes] = open(f, "rb")
        close = fh.close
    else:
        fh, close = f, (lambda: None)
        if not (hasattr(fh, "seek") and hasattr(fh, "tell")):
            fh = io.BytesIO(fh.read())
    try:
        start = fh.tell()
        size = fh.seek(0, io.SEEK_END) - start
        fh.seek(start)
        if start:
            fh = io.BytesIO(fh.read())
        if kind is None:
            kind = "zip" if fh.read(4) == b"PK\x03\x04" else "legacy"
            fh.seek(0)
        archive: Archive = ZipArchive(fh, name, size) if kind == "zip" else LegacyArchive(fh, name, size)
    except BaseException:
        close()
        raise
    return archive, close
