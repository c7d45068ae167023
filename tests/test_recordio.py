"""insightface RecordIO without MXNet: framing, IRHeader packing, the writer, random access and bad files."""

from __future__ import annotations

import struct
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from fr_invariance.data.datasets.base import collate_faces
from fr_invariance.data.datasets.recordio import (
    MAGIC,
    IRHeader,
    RecordIOFaces,
    RecordIOFormatError,
    RecordIOWriter,
    frame_record,
    pack,
    pack_image_folder,
    unframe_record,
    unpack,
    write_face_recordio,
)

MAGIC_LE = struct.pack("<I", 0xCED7230A)


def _jpeg(rgb: tuple[int, int, int], size: int = 16) -> bytes:
    image = np.zeros((size, size, 3), np.uint8)
    image[:] = rgb[::-1]  # cv2 writes BGR
    return cv2.imencode(".png", image)[1].tobytes()  # lossless, so pixels read back exactly


COLOURS = [(200, 40, 10), (10, 220, 30), (60, 70, 250)]


def _fixture(directory: Path, per_identity: int = 3) -> list[tuple[int, bytes]]:
    samples = [(label, _jpeg((r, g + 5 * k, b))) for label, (r, g, b) in enumerate(COLOURS) for k in range(per_identity)]
    write_face_recordio(directory, samples)
    return samples


def test_framing_matches_the_dmlc_layout_by_hand():
    payload = b"abcdefg"  # 7 bytes: one chunk, cflag 0, padded with one zero byte
    assert frame_record(payload) == MAGIC_LE + struct.pack("<I", 7) + payload + b"\0"
    # the magic at an aligned position splits the record: start part (cflag 1) + end part (cflag 3)
    payload = b"ABCD" + MAGIC_LE + b"xy"
    expected = (MAGIC_LE + struct.pack("<I", (1 << 29) | 4) + b"ABCD"
                + MAGIC_LE + struct.pack("<I", (3 << 29) | 2) + b"xy\0\0")
    assert frame_record(payload) == expected
    assert unframe_record(expected) == (payload, len(expected))
    # an unaligned magic is ordinary data
    unaligned = b"A" + MAGIC_LE + b"B"
    assert frame_record(unaligned)[4:8] == struct.pack("<I", 6)


@pytest.mark.parametrize("payload", [b"", b"x", MAGIC_LE, MAGIC_LE * 3 + b"tail", b"12345678" + MAGIC_LE])
def test_framing_round_trip(payload):
    framed = frame_record(payload)
    assert len(framed) % 4 == 0
    assert unframe_record(framed + b"junk") == (payload, len(framed))


def test_irheader_pack_is_mxnets_layout():
    record = pack(IRHeader(0, 7.0, 11, 0), b"IMG")
    assert record == struct.pack("<IfQQ", 0, 7.0, 11, 0) + b"IMG"
    record = pack(IRHeader(0, [3.0, 9.0], 1, 0), b"IMG")  # array label: flag = size, header label 0
    assert record == struct.pack("<IfQQ", 2, 0.0, 1, 0) + np.array([3, 9], "<f4").tobytes() + b"IMG"
    header, image = unpack(record)
    assert header.flag == 2 and header.label.tolist() == [3.0, 9.0] and header.id == 1 and image == b"IMG"


def test_written_files_have_the_insightface_layout(tmp_path):
    samples = _fixture(tmp_path)
    lines = (tmp_path / "train.idx").read_text().splitlines()
    keys = [int(line.split("\t")[0]) for line in lines]
    assert keys == list(range(0, 1 + 9 + 3))  # header, 9 images, 3 identity records
    data = (tmp_path / "train.rec").read_bytes()
    offsets = [int(line.split("\t")[1]) for line in lines]
    header, body = unpack(unframe_record(data, offsets[0])[0])
    assert header.flag == 2 and header.label.tolist() == [10.0, 13.0] and body == b""
    identity, _ = unpack(unframe_record(data, offsets[11])[0])  # second identity: images 4..6
    assert identity.label.tolist() == [4.0, 7.0]
    image_header, image = unpack(unframe_record(data, offsets[5])[0])
    assert image_header.flag == 0 and image_header.label == 1.0 and image == samples[4][1]


def test_dataset_reads_back_exactly(tmp_path):
    samples = _fixture(tmp_path)
    dataset = RecordIOFaces(tmp_path, image_size=16)
    assert dataset.num_classes == 3 and len(dataset) == 9
    assert dataset.labels.tolist() == [label for label, _ in samples]
    for index, (label, encoded) in enumerate(samples):
        image, item_label, item_index, problem = dataset[index]
        expected = cv2.cvtColor(cv2.imdecode(np.frombuffer(encoded, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
        assert torch.equal(image, torch.from_numpy(expected).permute(2, 0, 1))
        assert (item_label, item_index, problem) == (label, index, "")
        assert dataset._read(index) == encoded


def test_labels_from_image_headers_when_there_are_no_identity_records(tmp_path):
    with RecordIOWriter(tmp_path / "train.rec", tmp_path / "train.idx") as writer:
        writer.write(0, pack(IRHeader(2, [5, 5]), b""))  # a = b: no identity records
        for key, label in zip(range(1, 5), (7.0, 3.0, 7.0, [3.0, 0.5])):  # the last one with flag 2
            writer.write(key, pack(IRHeader(0, label, key, 0), _jpeg((key * 40, 0, 0))))
    dataset = RecordIOFaces(tmp_path, image_size=16)
    assert dataset.class_names == ["3", "7"]
    assert dataset.labels.tolist() == [1, 0, 1, 0]


def test_images_containing_the_magic_read_back(tmp_path):
    tricky = b"\x89PNG" + MAGIC_LE * 2 + b"rest"  # not decodable, but framing must round-trip it
    with RecordIOWriter(tmp_path / "train.rec", tmp_path / "train.idx") as writer:
        writer.write(0, pack(IRHeader(2, [3, 3]), b""))
        writer.write(1, pack(IRHeader(0, 0.0, 1, 0), _jpeg((1, 2, 3))))
        writer.write(2, pack(IRHeader(0, 1.0, 2, 0), tricky))
    dataset = RecordIOFaces(tmp_path, image_size=16)
    assert dataset._read(1) == tricky
    assert dataset[1][0] is None and "Cannot decode" in dataset[1][3]


def test_pack_image_folder_and_loader_workers(tmp_path):
    root = tmp_path / "folder"
    for name, rgb in zip(("b", "a"), COLOURS):
        (root / name).mkdir(parents=True)
        for k in range(3):
            (root / name / f"{k}.png").write_bytes(_jpeg(rgb))
    assert pack_image_folder(root, tmp_path / "rec") == (6, 2)
    dataset = RecordIOFaces(tmp_path / "rec", image_size=8)
    loader = DataLoader(dataset, batch_size=4, num_workers=2, collate_fn=collate_faces)
    batches = list(loader)
    labels = torch.cat([batch["labels"] for batch in batches])
    assert labels.tolist() == [0, 0, 0, 1, 1, 1]  # "a" is identity 0 (sorted folders)
    first = batches[0]["images"][0]
    assert first.dtype == torch.uint8 and first.shape == (3, 8, 8)
    assert first[:, 0, 0].tolist() == list(COLOURS[1])


# --- bad files: one clear error each, naming the file and the fix -----------------------------------------


def test_wrong_magic_is_a_clear_error(tmp_path):
    _fixture(tmp_path)
    data = bytearray((tmp_path / "train.rec").read_bytes())
    data[:4] = b"\x00\x01\x02\x03"
    (tmp_path / "train.rec").write_bytes(bytes(data))
    with pytest.raises(RecordIOFormatError, match=r"train\.rec is not an MXNet/insightface RecordIO file.*magic 0xced7230a.*pack-folder"):
        RecordIOFaces(tmp_path).setup()


def test_index_offset_past_the_end_is_a_clear_error(tmp_path):
    _fixture(tmp_path)
    size = (tmp_path / "train.rec").stat().st_size
    with open(tmp_path / "train.idx", "a") as handle:
        handle.write(f"99\t{size + 100}\n")
    with pytest.raises(RecordIOFormatError, match=r"train\.idx: key 99 points at offset \d+, past the end of .*train\.rec"):
        RecordIOFaces(tmp_path).setup()


def test_label_range_disagreeing_with_the_index_is_a_clear_error(tmp_path):
    _fixture(tmp_path)
    lines = (tmp_path / "train.idx").read_text().splitlines()
    (tmp_path / "train.idx").write_text("\n".join(lines[:3] + lines[5:]) + "\n")  # drop image records 3 and 4
    with pytest.raises(RecordIOFormatError, match=r"disagree: record 0 says images are records 1\.\.9, but the \.idx lacks 2 "
                                                  r"of those keys \(first: 3\)"):
        RecordIOFaces(tmp_path).setup()


def test_labels_are_the_image_headers_even_with_identity_records(tmp_path):
    """As insightface's arcface_torch reader: every image record 1..a-1 is a sample, labelled by its own header
    (``label[0]`` of a label array); identity records (here inconsistent, and covering image 3 only) are
    not used. Their float32 bounds cannot address images beyond 2^24 exactly."""
    with RecordIOWriter(tmp_path / "train.rec", tmp_path / "train.idx") as writer:
        writer.write(0, pack(IRHeader(2, [5, 6]), b""))
        for key, label in zip(range(1, 5), (20.0, [10.0, 1.0], 20.0, 10.0)):
            writer.write(key, pack(IRHeader(0, label, key, 0), _jpeg((key * 40, 0, 0))))
        writer.write(5, pack(IRHeader(2, [3, 4]), b""))
    dataset = RecordIOFaces(tmp_path, image_size=16)
    assert len(dataset) == 4 and dataset.class_names == ["10", "20"]
    assert dataset.labels.tolist() == [1, 0, 1, 0]


def test_a_key_listed_twice_takes_its_last_offset_as_mxnet_does(tmp_path):
    samples = _fixture(tmp_path)
    lines = (tmp_path / "train.idx").read_text().splitlines()
    offsets = dict(line.split("\t") for line in lines)
    stale = f"2\t{offsets['7']}"  # an earlier line for key 2 pointing at image 7's record
    (tmp_path / "train.idx").write_text("\n".join([stale, *lines]) + "\n")
    dataset = RecordIOFaces(tmp_path, image_size=16)
    assert dataset._read(1) == samples[1][1]


def test_damaged_header_record_is_a_clear_error(tmp_path):
    _fixture(tmp_path)
    data = bytearray((tmp_path / "train.rec").read_bytes())
    struct.pack_into("<I", data, 4, 1 << 20)  # record 0's length now runs past the end of the file
    (tmp_path / "train.rec").write_bytes(bytes(data))
    with pytest.raises(RecordIOFormatError, match=r"record 0 of .*train\.rec is damaged"):
        RecordIOFaces(tmp_path).setup()


def test_truncated_image_record_is_reported_as_a_bad_sample(tmp_path):
    samples = [(0, _jpeg((1, 2, 3))), (0, _jpeg((4, 5, 6))), (1, _jpeg((7, 8, 9)))]
    write_face_recordio(tmp_path, samples)
    lines = (tmp_path / "train.idx").read_text().splitlines()
    offsets = {int(k): int(v) for k, v in (line.split("\t") for line in lines)}
    data = bytearray((tmp_path / "train.rec").read_bytes())
    # corrupt record 2's length word so that its chunk runs past the end of the file
    struct.pack_into("<I", data, offsets[2] + 4, 1 << 20)
    (tmp_path / "train.rec").write_bytes(bytes(data))
    dataset = RecordIOFaces(tmp_path, image_size=16)
    image, label, index, problem = dataset[1]
    assert image is None and label == 0 and index == 1
    assert "record 2 of" in problem and "truncated" in problem
    assert dataset[2][3] == "" and MAGIC == 0xCED7230A


def test_pack_synthetic_renders_once_into_a_readable_rec(tmp_path):
    from fr_invariance.data.datasets.recordio import main
    from fr_invariance.synth.identity import sample_identities
    from fr_invariance.synth.render import render

    main(["pack-synthetic", str(tmp_path), "--identities", "3", "--images", "2", "--image-size", "32",
          "--attr", "contrast", "--strength", "0"])
    dataset = RecordIOFaces(tmp_path, image_size=32)
    assert dataset.labels.tolist() == [0, 0, 1, 1, 2, 2]
    # strength 0 on contrast, small nuisance elsewhere: the JPEG is close to a neutral render of the identity
    neutral = render(sample_identities(3, 0)[2:3], torch.zeros(1, 8), size=32)[0]
    decoded = dataset[5][0].float() / 255.0
    assert (decoded - neutral).abs().mean() < 0.08
    other = dataset[0][0].float() / 255.0
    assert (decoded - neutral).abs().mean() < (other - neutral).abs().mean()
