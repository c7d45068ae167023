"""insightface / MXNet RecordIO (``train.rec`` + ``train.idx``) without MXNet: reader, dataset and writer.

Format (DESIGN §10; dmlc-core's RecordIO framing and mxnet's ``recordio.pack``):

- every chunk starts with two little-endian uint32: the magic ``0xced7230a`` and ``lrecord``, whose lower
  29 bits are the chunk's payload length and upper 3 bits a continuation flag ``cflag`` (0 whole record,
  1 first part, 2 middle part, 3 last part). The writer splits a record wherever the magic appears at a
  4-byte-aligned position of its payload and drops those 4 bytes; the reader puts the magic back between
  parts. Each chunk's payload is zero-padded to a multiple of 4 bytes.
- a record's payload is an ``IRHeader`` packed ``<IfQQ`` (flag uint32, label float32, id uint64, id2
  uint64; 24 bytes), then ``flag`` float32 labels when ``flag > 0`` (the header's label is then 0), then
  the encoded image (JPEG).
- ``train.idx`` holds ``key\\toffset`` lines (decimal), the byte offset of each record's first chunk.
- insightface layout: record 0 has ``flag 2`` and labels ``(a, b)``: records ``1 .. a-1`` are images,
  records ``a .. b-1`` (when ``a < b``) are one record per identity whose two labels ``(start, end)``
  give that identity's image records ``start .. end-1``. The reader, like insightface's, takes every image
  record ``1 .. a-1`` and labels it by its own header; it does not need the identity records (their
  float32 bounds are inexact beyond 2^24 images). Without the header record, every record is an image.

Command line (packs fixtures and large rendered training sets once, to be streamed)::

    python -m fr_invariance.data.datasets.recordio pack-folder IMAGE_ROOT OUT_DIR
    python -m fr_invariance.data.datasets.recordio pack-synthetic OUT_DIR --identities 1000 --images 50
"""

from __future__ import annotations

import argparse
import os
import struct
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import cv2
import numpy as np

from fr_invariance.data.datasets.base import CorruptImageError, DataFormatError, FaceImageDataset
from fr_invariance.data.datasets.image_folder import scan_image_folder
from fr_invariance.errors import ConfigurationError, MissingPathError

MAGIC = 0xCED7230A
MAGIC_BYTES = struct.pack("<I", MAGIC)
IR_FORMAT = "<IfQQ"
IR_SIZE = struct.calcsize(IR_FORMAT)  # 24
LENGTH_BITS = 29
LENGTH_MASK = (1 << LENGTH_BITS) - 1
FIX_HINT = "Rebuild the pair with `python -m fr_invariance.data.datasets.recordio pack-folder` or fix data.root."


class RecordIOFormatError(DataFormatError):
    """A ``.rec`` / ``.idx`` pair that does not follow the RecordIO layout."""


@dataclass(frozen=True)
class IRHeader:
    """Header of one image record: ``flag`` (number of extra labels), ``label`` (the float label, or the
    ``flag`` labels ``(flag,)`` float32 when ``flag > 0``), ``id`` and ``id2``."""

    flag: int
    label: float | np.ndarray
    id: int = 0
    id2: int = 0


# --- framing -----------------------------------------------------------------------------------------


def _padded(length: int) -> int:
    return (length + 3) & ~3


def frame_record(payload: bytes) -> bytes:
    """One record as it is stored in a ``.rec``: magic + ``lrecord`` + payload, split at aligned magics,
    each chunk zero-padded to 4 bytes."""
    if len(payload) > LENGTH_MASK:
        raise ValueError(f"A RecordIO record holds at most {LENGTH_MASK} bytes, got {len(payload)}.")
    chunks, start = [], 0
    for position in range(0, len(payload) - len(payload) % 4, 4):
        if payload[position : position + 4] == MAGIC_BYTES:
            chunks.append((1 if start == 0 else 2, payload[start:position]))
            start = position + 4
    chunks.append((3 if start else 0, payload[start:]))
    out = bytearray()
    for cflag, part in chunks:
        out += MAGIC_BYTES + struct.pack("<I", (cflag << LENGTH_BITS) | len(part)) + part
        out += b"\0" * (_padded(len(part)) - len(part))
    return bytes(out)


def unframe_record(buffer: bytes | memoryview, offset: int = 0, source: str = "record") -> tuple[bytes, int]:
    """Payload of the record whose first chunk starts at ``offset`` of ``buffer``, and the offset after it.

    Raises :class:`CorruptImageError` for a missing magic or a record running past the buffer's end.
    """
    parts: list[bytes] = []
    end = len(buffer)
    while True:
        if offset + 8 > end:
            raise CorruptImageError(f"{source} is truncated (chunk header past the end of the file).")
        magic, lrecord = struct.unpack_from("<II", buffer, offset)
        if magic != MAGIC:
            raise CorruptImageError(f"{source}: no RecordIO magic at byte {offset} (found {magic:#010x}).")
        cflag, length = lrecord >> LENGTH_BITS, lrecord & LENGTH_MASK
        if offset + 8 + length > end:
            raise CorruptImageError(f"{source} is truncated ({length}-byte chunk runs past the end of the file).")
        parts.append(bytes(buffer[offset + 8 : offset + 8 + length]))
        offset += 8 + _padded(length)
        if cflag in (0, 3):
            return MAGIC_BYTES.join(parts), offset
        if cflag not in (1, 2):
            raise CorruptImageError(f"{source}: invalid continuation flag {cflag}.")


def pack(header: IRHeader | tuple, image: bytes) -> bytes:
    """A record payload like ``mxnet.recordio.pack``: a scalar label is stored in the header with ``flag 0``;
    an array label is stored after the header as float32, with ``flag = len(labels)`` and header label 0."""
    header = header if isinstance(header, IRHeader) else IRHeader(*header)
    if np.ndim(header.label) == 0:
        return struct.pack(IR_FORMAT, 0, float(header.label), header.id, header.id2) + image
    labels = np.asarray(header.label, dtype="<f4").reshape(-1)
    return struct.pack(IR_FORMAT, labels.size, 0.0, header.id, header.id2) + labels.tobytes() + image


def unpack(payload: bytes) -> tuple[IRHeader, bytes]:
    """``(header, image bytes)`` of a record payload (inverse of :func:`pack`)."""
    if len(payload) < IR_SIZE:
        raise CorruptImageError(f"record payload of {len(payload)} bytes is shorter than its {IR_SIZE}-byte header.")
    flag, label, id_, id2 = struct.unpack_from(IR_FORMAT, payload)
    body = payload[IR_SIZE:]
    if flag > 0:
        if len(body) < 4 * flag:
            raise CorruptImageError(f"record payload too short for its {flag} labels.")
        return IRHeader(flag, np.frombuffer(body, dtype="<f4", count=flag).copy(), id_, id2), body[4 * flag :]
    return IRHeader(flag, label, id_, id2), body


# --- writer ------------------------------------------------------------------------------------------


class RecordIOWriter:
    """Writes ``key -> record payload`` into a ``.rec`` and its ``.idx`` (``key\\toffset`` lines)."""

    def __init__(self, rec_path: str | Path, idx_path: str | Path) -> None:
        self.rec_path, self.idx_path = Path(rec_path), Path(idx_path)
        self.rec_path.parent.mkdir(parents=True, exist_ok=True)
        self._rec = open(self.rec_path, "wb")
        self._idx = open(self.idx_path, "w", encoding="ascii")

    def write(self, key: int, payload: bytes) -> int:
        """Append one record; returns its offset."""
        offset = self._rec.tell()
        self._rec.write(frame_record(payload))
        self._idx.write(f"{int(key)}\t{offset}\n")
        return offset

    def rewrite(self, offset: int, payload: bytes) -> None:
        """Overwrite a record in place with a payload framing to the same size (record 0's final range)."""
        framed = frame_record(payload)
        end = self._rec.tell()
        self._rec.seek(offset)
        self._rec.write(framed)
        self._rec.seek(end)

    def close(self) -> None:
        self._rec.close()
        self._idx.close()

    def __enter__(self) -> "RecordIOWriter":
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None) -> None:
        self.close()


def write_face_recordio(directory: str | Path, samples: Iterable[tuple[int, bytes]], name: str = "train") -> tuple[int, int]:
    """Write an insightface-layout ``<name>.rec`` / ``<name>.idx`` into ``directory``.

    Args:
        samples: ``(label, encoded image)`` grouped by label, labels ``0..K-1`` in increasing order (each
            identity's images contiguous). Image records get ``IRHeader(0, label, key, 0)``.

    Returns ``(number of images, number of identities)``. Record 0 gets ``flag 2`` and ``(a, b)``; records
    ``a .. b-1`` hold each identity's ``(start, end)`` image range.
    """
    directory = Path(directory)
    ranges: list[tuple[int, int]] = []
    with RecordIOWriter(directory / f"{name}.rec", directory / f"{name}.idx") as writer:
        placeholder = pack(IRHeader(2, np.zeros(2), 0, 0), b"")
        writer.write(0, placeholder)
        key = 1
        for label, encoded in samples:
            label = int(label)
            if label == len(ranges):
                ranges.append((key, key))
            elif label != len(ranges) - 1:
                raise ValueError(f"samples must be grouped by label 0, 1, 2, ...; got label {label} after {len(ranges) - 1}.")
            writer.write(key, pack(IRHeader(0, float(label), key, 0), encoded))
            ranges[-1] = (ranges[-1][0], key + 1)
            key += 1
        first_identity = key
        for start, end in ranges:
            writer.write(key, pack(IRHeader(2, np.array([start, end]), key, 0), b""))
            key += 1
        writer.rewrite(0, pack(IRHeader(2, np.array([first_identity, key]), 0, 0), b""))
    return first_identity - 1, len(ranges)


def pack_image_folder(root: str | Path, directory: str | Path, jpeg_quality: int | None = None) -> tuple[int, int]:
    """Pack ``root/<identity>/<image>`` into ``directory/train.{rec,idx}`` (labels in sorted folder order).

    Files are stored byte for byte (decodable by OpenCV, like the folder itself); with ``jpeg_quality``
    every image is re-encoded as JPEG at that quality. Returns ``(images, identities)``.
    """
    _, files = scan_image_folder(Path(root))

    def encoded() -> Iterator[tuple[int, bytes]]:
        for path, label in files:
            data = Path(path).read_bytes()
            if jpeg_quality is not None:
                image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
                if image is None:
                    raise CorruptImageError(f"Cannot decode image {path}; remove it before packing.")
                data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, int(jpeg_quality)])[1].tobytes()
            yield label, data

    return write_face_recordio(directory, encoded())


def pack_synthetic(
    directory: str | Path,
    identities: int,
    images_per_identity: int,
    image_size: int = 112,
    identity_seed: int = 0,
    seed: int = 0,
    attr: str = "none",
    strength: float = 0.5,
    jpeg_quality: int = 95,
    batch_size: int = 256,
    device: str = "cpu",
) -> tuple[int, int]:
    """Render a synthetic training set once (identities ``sample_identities(identities, identity_seed)``,
    controls drawn as in training: ``attr`` from ``U(-strength, strength)``, the others from their nuisance
    ranges) and pack it as JPEG into ``directory/train.{rec,idx}``. Returns ``(images, identities)``."""
    import torch

    from fr_invariance.data.controls import sample_controls, training_ranges
    from fr_invariance.synth.identity import sample_identities
    from fr_invariance.synth.render import render

    people = sample_identities(identities, identity_seed)
    half_widths = training_ranges(attr, strength)
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(identities).repeat_interleave(images_per_identity)
    controls = sample_controls(labels.numel(), half_widths, generator)

    def encoded() -> Iterator[tuple[int, bytes]]:
        for start in range(0, labels.numel(), batch_size):
            rows = labels[start : start + batch_size]
            images = render(people[rows].to(device), controls[start : start + batch_size].to(device), size=image_size)
            pixels = (images * 255.0).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
            for label, image in zip(rows.tolist(), pixels):
                bgr = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
                yield label, cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, int(jpeg_quality)])[1].tobytes()

    return write_face_recordio(directory, encoded())


# --- reader ------------------------------------------------------------------------------------------


def read_index(idx_path: Path, rec_size: int, rec_path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Keys ``(N,)`` and offsets ``(N,)`` int64 of a ``.idx``; every offset must lie inside the ``.rec``."""
    keys, offsets = [], []
    with open(idx_path, encoding="ascii", errors="replace") as handle:
        for number, line in enumerate(handle, start=1):
            fields = line.strip().split("\t")
            if fields == [""]:
                continue
            try:
                key, offset = int(fields[0]), int(fields[1])
            except (ValueError, IndexError):
                raise RecordIOFormatError(
                    f"{idx_path} line {number} is not 'key<TAB>offset': {line.strip()[:60]!r}. {FIX_HINT}"
                ) from None
            keys.append(key)
            offsets.append(offset)
    if not keys:
        raise RecordIOFormatError(f"{idx_path} is empty. {FIX_HINT}")
    keys_array, offsets_array = np.asarray(keys, dtype=np.int64), np.asarray(offsets, dtype=np.int64)
    past = np.flatnonzero((offsets_array < 0) | (offsets_array + 8 > rec_size))
    if past.size:
        k = past[0]
        raise RecordIOFormatError(
            f"{idx_path}: key {keys_array[k]} points at offset {offsets_array[k]}, past the end of {rec_path} "
            f"({rec_size} bytes; {past.size} such keys): the index does not belong to this .rec or the .rec is "
            f"truncated. {FIX_HINT}"
        )
    return keys_array, offsets_array


class RecordIOFile:
    """Random access to the records of a ``.rec`` through its ``.idx`` (one ``pread`` per record).

    Safe in DataLoader worker processes: the file is (re)opened lazily in each process; the index is
    kept as numpy arrays (cheap to send to workers).

    Attributes:
        keys: ``(N,)`` sorted record keys; ``offsets`` / ``extents`` ``(N,)``: each record's first byte and the
            bytes up to the next record (or the end of the file).
    """

    def __init__(self, rec_path: str | Path, idx_path: str | Path) -> None:
        self.rec_path, self.idx_path = Path(rec_path), Path(idx_path)
        for path in (self.rec_path, self.idx_path):
            if not path.is_file():
                raise MissingPathError(
                    f"RecordIO file {path} not found: data.root must hold train.rec and train.idx "
                    "(insightface layout)."
                )
        self.size = self.rec_path.stat().st_size
        keys, offsets = read_index(self.idx_path, self.size, self.rec_path)
        # sorted keys; a key listed twice takes its last line's offset, as MXNet's index dict does
        self.keys, last_line = np.unique(keys[::-1], return_index=True)
        self.offsets = offsets[::-1][last_line]
        boundaries = np.unique(np.append(offsets, self.size))
        self.extents = boundaries[np.searchsorted(boundaries, self.offsets, side="right")] - self.offsets
        self._fd: int | None = None
        self._pid: int | None = None

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_fd": None, "_pid": None}

    def _descriptor(self) -> int:
        if self._fd is None or self._pid != os.getpid():
            self._fd, self._pid = os.open(self.rec_path, os.O_RDONLY), os.getpid()
        return self._fd

    def __del__(self) -> None:
        if getattr(self, "_fd", None) is not None and self._pid == os.getpid():
            os.close(self._fd)

    def has(self, keys: np.ndarray) -> np.ndarray:
        """Whether each key is in the index ``(len(keys),)`` bool."""
        return np.isin(keys, self.keys)

    def _position(self, key: int) -> int:
        position = int(np.searchsorted(self.keys, key))
        if position >= len(self.keys) or self.keys[position] != key:
            raise KeyError(f"record {key} is not in {self.idx_path}")
        return position

    def offset(self, key: int) -> int:
        return int(self.offsets[self._position(key)])

    def describe(self, key: int) -> str:
        return f"record {key} of {self.rec_path}"

    def read(self, key: int) -> bytes:
        """Payload of record ``key`` (raises :class:`CorruptImageError` when truncated or unframed)."""
        position = self._position(key)
        offset, extent = int(self.offsets[position]), int(self.extents[position])
        buffer = os.pread(self._descriptor(), extent, offset)
        try:
            return unframe_record(buffer, 0, self.describe(key))[0]
        except CorruptImageError:
            if extent < self.size - offset:  # a record overlapping the next key's offset: read to the end
                return unframe_record(os.pread(self._descriptor(), self.size - offset, offset), 0, self.describe(key))[0]
            raise

    def check_magic(self, key: int) -> None:
        """Raise :class:`RecordIOFormatError` unless record ``key`` starts with the RecordIO magic."""
        offset = self.offset(key)
        head = os.pread(self._descriptor(), 4, offset)
        if head != MAGIC_BYTES:
            found = struct.unpack("<I", head.ljust(4, b"\0"))[0]
            raise RecordIOFormatError(
                f"{self.rec_path} is not an MXNet/insightface RecordIO file: record {key} (offset "
                f"{offset}) starts with {found:#010x}, expected the magic {MAGIC:#010x}. {FIX_HINT}"
            )

    def header_labels(self, keys: np.ndarray) -> np.ndarray:
        """First label of each record's header ``(len(keys),)`` float64, read without decoding images
        (vectorised over a memory map; split records are decoded in full)."""
        memory = np.memmap(self.rec_path, dtype=np.uint8, mode="r")
        labels = np.empty(len(keys), dtype=np.float64)
        width = 8 + IR_SIZE + 4
        for start in range(0, len(keys), 1 << 18):
            chunk = keys[start : start + (1 << 18)]
            offsets = self.offsets[np.searchsorted(self.keys, chunk)]
            rows = memory[np.minimum(offsets[:, None] + np.arange(width), self.size - 1)]
            words = rows[:, :8].copy().view("<u4")
            bad = np.flatnonzero(words[:, 0] != MAGIC)
            if bad.size:
                self.check_magic(int(chunk[bad[0]]))
            flag = rows[:, 8:12].copy().view("<u4")[:, 0]
            scalar = rows[:, 12:16].copy().view("<f4")[:, 0]
            first_extra = rows[:, 32:36].copy().view("<f4")[:, 0]
            values = np.where(flag > 0, first_extra, scalar).astype(np.float64)
            split = np.flatnonzero((words[:, 1] >> LENGTH_BITS) != 0)
            for row in split:  # magic inside the first bytes: decode the whole record
                header, _ = unpack(self.read(int(chunk[row])))
                values[row] = float(np.atleast_1d(header.label)[0])
            labels[start : start + len(chunk)] = values
        del memory
        return labels


class RecordIOFaces(FaceImageDataset):
    """Faces from an insightface ``train.rec`` / ``train.idx`` pair (map-style; decoding in the workers).

    Args:
        root: folder holding ``<name>.rec`` and ``<name>.idx``.
        image_size: side of the returned images in pixels (resized when the records differ).
        name: file stem (``train``).

    Samples are the image records ``1 … a−1`` when record 0 is insightface's header (flag ≥ 2, labels
    ``(a, b)``), else every record. Labels are each image's own header label (``label[0]`` of a label array),
    numbered ``0 … K−1`` in sorted order, as insightface's readers take them. Identity records (``a … b−1``)
    are not needed: their ranges are float32 and inexact beyond 2^24 images (Glint360K, WebFace42M).
    """

    def __init__(self, root: str | Path | None, image_size: int = 112, name: str = "train") -> None:
        super().__init__(image_size)
        self.root = Path(root) if root is not None else None  # None: no data (an optional held-out set)
        self.name = name
        self.file: RecordIOFile | None = None
        self.keys: np.ndarray = np.empty(0, dtype=np.int64)

    def _index(self) -> tuple[np.ndarray, list[str]]:
        if self.root is None:
            raise ConfigurationError("data.root is not set: give data.root=DIR holding train.rec and train.idx.")
        if not self.root.is_dir():
            raise MissingPathError(f"RecordIO folder {self.root} does not exist: set data.root=DIR holding "
                                    f"{self.name}.rec and {self.name}.idx.")
        file = self.file = RecordIOFile(self.root / f"{self.name}.rec", self.root / f"{self.name}.idx")
        first_key = int(file.keys[0])
        file.check_magic(first_key)
        try:
            header, body = unpack(file.read(first_key))
        except CorruptImageError as error:
            raise RecordIOFormatError(f"record {first_key} of {file.rec_path} is damaged ({error}); the file is "
                                      f"truncated or not a RecordIO file. {FIX_HINT}") from None
        if first_key == 0 and header.flag >= 2 and not body:  # insightface's header record
            return self._index_with_range(header)
        self.keys = file.keys.copy()
        return self._labels_from_headers()

    def _range_error(self, message: str) -> RecordIOFormatError:
        return RecordIOFormatError(f"{self.file.rec_path} and {self.file.idx_path} disagree: {message} {FIX_HINT}")

    def _index_with_range(self, header: IRHeader) -> tuple[np.ndarray, list[str]]:
        file = self.file
        labels = np.atleast_1d(header.label)
        if labels.size < 2:
            raise self._range_error(f"record 0 has flag {header.flag} but no (a, b) image/identity range.")
        first_identity, end = int(labels[0]), int(labels[1])
        if not 1 < first_identity <= end:
            raise self._range_error(f"record 0's range (a={first_identity}, b={end}) is not 1 < a <= b.")
        images = np.arange(1, first_identity, dtype=np.int64)
        missing = images[~file.has(images)]
        if missing.size:
            raise self._range_error(
                f"record 0 says images are records 1..{first_identity - 1}, but the .idx lacks {missing.size} of "
                f"those keys (first: {missing[0]})."
            )
        self.keys = images
        return self._labels_from_headers()

    def _labels_from_headers(self) -> tuple[np.ndarray, list[str]]:
        values = self.file.header_labels(self.keys)
        if not np.all(np.isfinite(values)) or np.any(values != np.round(values)) or np.any(values < 0):
            bad = int(np.flatnonzero(~np.isfinite(values) | (values != np.round(values)) | (values < 0))[0])
            raise self._range_error(f"image record {self.keys[bad]} has label {values[bad]}, not an identity number.")
        classes, labels = np.unique(values.astype(np.int64), return_inverse=True)
        return labels.astype(np.int64), [str(c) for c in classes]

    def describe(self, index: int) -> str:
        self.setup()
        return self.file.describe(int(self.keys[index]))

    def _read(self, index: int) -> bytes:
        self.setup()
        return unpack(self.file.read(int(self.keys[index])))[1]

    def record_header(self, index: int) -> IRHeader:
        """The ``IRHeader`` of sample ``index``."""
        self.setup()
        return unpack(self.file.read(int(self.keys[index])))[0]


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m fr_invariance.data.datasets.recordio", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    folder = commands.add_parser("pack-folder", help="pack root/<identity>/<image> into OUT/train.{rec,idx}")
    folder.add_argument("root")
    folder.add_argument("out")
    folder.add_argument("--jpeg-quality", type=int, default=None, help="re-encode every image as JPEG")
    synthetic = commands.add_parser("pack-synthetic", help="render a synthetic training set into OUT/train.{rec,idx}")
    synthetic.add_argument("out")
    synthetic.add_argument("--identities", type=int, default=1000)
    synthetic.add_argument("--images", type=int, default=50, help="images per identity")
    synthetic.add_argument("--image-size", type=int, default=112)
    synthetic.add_argument("--identity-seed", type=int, default=0)
    synthetic.add_argument("--seed", type=int, default=0)
    synthetic.add_argument("--attr", default="none")
    synthetic.add_argument("--strength", type=float, default=0.5)
    synthetic.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    if args.command == "pack-folder":
        images, identities = pack_image_folder(args.root, args.out, args.jpeg_quality)
    else:
        images, identities = pack_synthetic(
            args.out, args.identities, args.images, args.image_size, args.identity_seed, args.seed,
            args.attr, args.strength, device=args.device,
        )
    print(f"wrote {images} images of {identities} identities to {Path(args.out) / 'train.rec'}")


if __name__ == "__main__":
    main()
