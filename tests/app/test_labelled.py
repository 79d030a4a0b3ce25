"""Labelled evaluation uploads: zip archives in the Kaggle layout and files with labels."""

from __future__ import annotations

import io
import stat
import zipfile

import pytest

from app.contract.images import Upload
from app.errors import InvalidArchive, InvalidLabels, PayloadTooLarge
from app.labelled import ArchiveLimits, parse_labels, read_labelled_archive

CLASSES = ["NORMAL", "PNEUMONIA"]
LIMITS = ArchiveLimits(max_entries=100, max_uncompressed_bytes=1_000_000)


def make_zip(entries: dict[str, bytes], symlinks: tuple[str, ...] = ()) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, content in entries.items():
            info = zipfile.ZipInfo(name)
            info.compress_type = zipfile.ZIP_DEFLATED
            if name in symlinks:
                info.external_attr = (stat.S_IFLNK | 0o777) << 16
            archive.writestr(info, content)
    return buffer.getvalue()


def test_class_comes_from_the_parent_folder_at_any_depth() -> None:
    data = make_zip(
        {
            "NORMAL/a.jpeg": b"a",
            "test/PNEUMONIA/b.jpeg": b"b",
            "chest_xray/test/normal/c.jpeg": b"c",  # folder names match case-insensitively
        }
    )
    examples = read_labelled_archive(data, CLASSES, LIMITS)
    assert [(e.upload.filename, e.label) for e in examples] == [
        ("NORMAL/a.jpeg", 0),
        ("test/PNEUMONIA/b.jpeg", 1),
        ("chest_xray/test/normal/c.jpeg", 0),
    ]
    assert examples[1].upload.data == b"b"


def test_hidden_files_and_macos_metadata_are_skipped() -> None:
    data = make_zip(
        {"NORMAL/a.jpeg": b"a", "__MACOSX/NORMAL/._a.jpeg": b"x", "NORMAL/.DS_Store": b""}
    )
    assert [e.upload.filename for e in read_labelled_archive(data, CLASSES, LIMITS)] == [
        "NORMAL/a.jpeg"
    ]


@pytest.mark.parametrize(
    "name", ["../NORMAL/evil.jpeg", "/NORMAL/evil.jpeg", "NORMAL/../../evil.jpeg", "C:/NORMAL/x"]
)
def test_path_traversal_is_refused(name: str) -> None:
    with pytest.raises(InvalidArchive, match="unsafe path"):
        read_labelled_archive(make_zip({name: b"x"}), CLASSES, LIMITS)


def test_symlinks_are_refused() -> None:
    data = make_zip({"NORMAL/link.jpeg": b"/etc/passwd"}, symlinks=("NORMAL/link.jpeg",))
    with pytest.raises(InvalidArchive, match="symbolic link"):
        read_labelled_archive(data, CLASSES, LIMITS)


def test_too_many_entries_is_refused() -> None:
    data = make_zip({f"NORMAL/{i}.jpeg": b"x" for i in range(5)})
    with pytest.raises(PayloadTooLarge, match="5 entries"):
        read_labelled_archive(
            data, CLASSES, ArchiveLimits(max_entries=4, max_uncompressed_bytes=10**6)
        )


def test_a_zip_bomb_is_refused_by_its_declared_size() -> None:
    data = make_zip({"NORMAL/bomb.jpeg": b"\0" * 5_000_000})
    assert len(data) < 50_000  # tiny on the wire
    with pytest.raises(PayloadTooLarge, match="uncompressed"):
        read_labelled_archive(data, CLASSES, LIMITS)


def test_a_zip_whose_headers_understate_the_size_is_cut_off() -> None:
    data = bytearray(make_zip({"NORMAL/bomb.jpeg": b"\0" * 2_000_000}))
    # Rewrite the declared uncompressed size (local header offset 22, central record
    # offset 24) to 10 bytes so only reading reveals the truth.
    data[22:26] = (10).to_bytes(4, "little")
    central = data.rfind(b"PK\x01\x02")
    data[central + 24 : central + 28] = (10).to_bytes(4, "little")
    with pytest.raises((PayloadTooLarge, InvalidArchive)):
        read_labelled_archive(bytes(data), CLASSES, LIMITS)


def test_unknown_class_folders_are_named_in_the_error() -> None:
    data = make_zip({"NORMAL/a.jpeg": b"a", "COVID/b.jpeg": b"b", "c.jpeg": b"c"})
    with pytest.raises(InvalidArchive, match=r"COVID.*not class names") as raised:
        read_labelled_archive(data, CLASSES, LIMITS)
    assert "(top level)" in str(raised.value)


def test_an_archive_without_images_is_refused() -> None:
    with pytest.raises(InvalidArchive, match="no images"):
        read_labelled_archive(make_zip({"NORMAL/": b""}), CLASSES, LIMITS)


def test_bytes_that_are_not_a_zip_are_refused() -> None:
    with pytest.raises(InvalidArchive, match="not a readable zip"):
        read_labelled_archive(b"%PDF-1.4 not a zip", CLASSES, LIMITS)


def uploads(count: int) -> list[Upload]:
    return [Upload(filename=f"{i}.png", data=b"x") for i in range(count)]


def test_labels_pair_with_files_in_order() -> None:
    examples = parse_labels("PNEUMONIA, normal,NORMAL", uploads(3), CLASSES)
    assert [e.label for e in examples] == [1, 0, 0]
    assert [e.upload.filename for e in examples] == ["0.png", "1.png", "2.png"]


def test_label_count_must_match_file_count() -> None:
    with pytest.raises(InvalidLabels, match="2 labels for 3 files"):
        parse_labels("NORMAL,NORMAL", uploads(3), CLASSES)


def test_unknown_labels_are_named() -> None:
    with pytest.raises(InvalidLabels, match="COVID"):
        parse_labels("NORMAL,COVID", uploads(2), CLASSES)
