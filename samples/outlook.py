"""Outlook .msg files for the tests, written from scratch: no library writes them.

A .msg is a Compound File (CFB, version 3: 512-byte sectors, streams under 4 KiB in a mini
stream of 64-byte sectors) holding MAPI properties as streams named ``__substg1.0_<tag><type>``
and fixed-size ones in ``__properties_version1.0``; each attachment is a storage of its own
([MS-OXMSG], [MS-CFB]). This writes the few properties a reader needs: class, subject, sender,
body, and attachments by value with their file names.
"""

from __future__ import annotations

import struct

SECTOR, MINI_SECTOR, CUTOFF = 512, 64, 4096
FREE, END_OF_CHAIN, FAT_SECTOR, NO_STREAM = 0xFFFFFFFF, 0xFFFFFFFE, 0xFFFFFFFD, 0xFFFFFFFF
STORAGE, STREAM, ROOT = 1, 2, 5
UNICODE, BINARY, LONG = "001F", "0102", "0003"


class _Entry:
    def __init__(self, name: str, kind: int, data: bytes = b"", children: list[_Entry] | None = None) -> None:
        self.name, self.kind, self.data, self.children = name, kind, data, children or []
        self.id = 0
        self.start, self.size = END_OF_CHAIN, 0
        self.next: _Entry | None = None  # its right sibling: siblings are a chain of right children


def _text(value: str) -> bytes:
    return value.encode("utf-16-le")  # a string property's stream holds no terminator


def _properties(header: bytes, fixed: list[tuple[int, int, int]]) -> bytes:
    """A properties stream: its header, then 16-byte entries (tag, flags, value) for fixed-size values."""
    return header + b"".join(struct.pack("<IIQ", tag, flags, value) for tag, flags, value in fixed)


def make_msg(subject: str, sender: str, body: str, attachments: list[tuple[str, bytes]] = ()) -> bytes:
    props = [(0x001A, UNICODE, _text("IPM.Note")), (0x0037, UNICODE, _text(subject)),
             (0x0C1A, UNICODE, _text(sender)), (0x1000, UNICODE, _text(body))]
    entries = [_Entry(f"__substg1.0_{tag:04X}{kind}", STREAM, data) for tag, kind, data in props]
    entries.append(_Entry("__nameid_version1.0", STORAGE, children=[  # no named properties: empty streams
        _Entry(f"__substg1.0_000{n}{BINARY}", STREAM) for n in (2, 3, 4)]))
    entries.append(_Entry("__properties_version1.0", STREAM, _properties(
        struct.pack("<8xIIII8x", 0, len(attachments), 0, len(attachments)), [])))
    for number, (name, data) in enumerate(attachments):
        entries.append(_Entry(f"__attach_version1.0_#{number:08X}", STORAGE, children=[
            _Entry(f"__substg1.0_3701{BINARY}", STREAM, data),
            _Entry(f"__substg1.0_3707{UNICODE}", STREAM, _text(name)),
            _Entry(f"__substg1.0_3704{UNICODE}", STREAM, _text(name[:12])),
            _Entry("__properties_version1.0", STREAM, _properties(
                b"\0" * 8, [(0x37050003, 6, 1), (0x0E200003, 6, len(data))])),  # by value; its size
        ]))
    return _compound_file(_Entry("Root Entry", ROOT, children=entries))


def _compound_file(root: _Entry) -> bytes:
    flat: list[_Entry] = []

    def number(entry: _Entry) -> None:
        entry.id = len(flat)
        flat.append(entry)
        for left, right in zip(entry.children, entry.children[1:], strict=False):
            left.next = right
        for child in entry.children:
            number(child)

    number(root)
    # streams under the cutoff go into the mini stream, 64 bytes a sector; the others into sectors
    mini, mini_fat = bytearray(), []
    big: list[_Entry] = []
    for entry in flat:
        if entry.kind != STREAM:
            continue
        entry.size = len(entry.data)
        if entry.size >= CUTOFF:
            big.append(entry)
            continue
        if not entry.size:
            continue  # an empty stream has no sectors: it starts at END_OF_CHAIN
        count = -(-entry.size // MINI_SECTOR)
        entry.start = len(mini_fat)
        mini_fat += [len(mini_fat) + i + 1 for i in range(count - 1)] + [END_OF_CHAIN]
        mini += entry.data.ljust(count * MINI_SECTOR, b"\0")
    root.data, root.size = bytes(mini), len(mini)
    blobs = [(root, root.data)] + [(e, e.data) for e in big]
    mini_fat_bytes = b"".join(struct.pack("<I", x) for x in mini_fat)
    directory = b"".join(_directory_entry(e) for e in flat)  # sizes and starts filled in below, then rewritten

    # sector layout: FAT sectors, then the mini FAT, the directory, then each blob
    def sectors(n: int) -> int:
        return max(1, -(-n // SECTOR))

    parts = [("minifat", mini_fat_bytes), ("directory", directory)] + [(e, d) for e, d in blobs]
    counts = [sectors(len(d)) for _, d in parts]
    fat_sectors = 1
    while fat_sectors * (SECTOR // 4) < fat_sectors + sum(counts):
        fat_sectors += 1
    fat = [FAT_SECTOR] * fat_sectors
    starts = []
    for count in counts:
        starts.append(len(fat))
        fat += [len(fat) + i + 1 for i in range(count - 1)] + [END_OF_CHAIN]
    fat += [FREE] * (fat_sectors * (SECTOR // 4) - len(fat))
    for (what, _), start in zip(parts, starts, strict=True):
        if isinstance(what, _Entry):
            what.start = start
    directory = b"".join(_directory_entry(e) for e in flat)
    parts[1] = ("directory", directory)
    header = struct.pack(
        "<8s16sHHHHH6sIIIIIIIII", bytes.fromhex("D0CF11E0A1B11AE1"), b"\0" * 16, 0x3E, 3, 0xFFFE, 9, 6,
        b"\0" * 6, 0, fat_sectors, starts[1], 0, CUTOFF, starts[0], counts[0], END_OF_CHAIN, 0)
    assert len(header) == 76
    difat = [*range(fat_sectors)] + [FREE] * (109 - fat_sectors)
    out = bytearray(header + b"".join(struct.pack("<I", x) for x in difat))
    out += b"".join(struct.pack("<I", x) for x in fat)
    for (_, data), count in zip(parts, counts, strict=True):
        out += data.ljust(count * SECTOR, b"\0")
    return bytes(out)


def _directory_entry(entry: _Entry) -> bytes:
    # siblings as a chain of right children (all black): a valid tree, if not a balanced one
    name = entry.name.encode("utf-16-le") + b"\0\0"
    child = entry.children[0].id if entry.children else NO_STREAM
    right = entry.next.id if entry.next is not None else NO_STREAM
    start = entry.start if entry.kind != STORAGE else 0
    return struct.pack("<64sHBBIII16sIQQIII", name, len(name), entry.kind, 1, NO_STREAM, right, child, b"\0" * 16, 0,
                       0, 0, start, entry.size, 0)

