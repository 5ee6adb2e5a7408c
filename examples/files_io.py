"""Files and disks on threads: write, fingerprint and compress a directory of files.

Run: python examples/files_io.py
"""

from __future__ import annotations

import gzip
import hashlib
import tempfile
from pathlib import Path

from just_distribute import distribute


@distribute(job="io", workers=8)
def save(data_to_write: bytes, filename: str, folder: Path, verbose: bool = True) -> int:
    """str and bytes are elements: one call per (content, name) pair."""
    written = (folder / filename).write_bytes(data_to_write)
    if verbose:
        print(f"wrote {written} bytes to {filename}")
    return written


@distribute(job="io", workers=8)
def fingerprint(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@distribute(job="io", workers=4)
def compress(path: Path) -> int:
    target = path.with_suffix(".gz")
    target.write_bytes(gzip.compress(path.read_bytes()))
    return target.stat().st_size


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        store = {f"record-{i:04d}.bin": bytes([i % 251]) * 4_096 for i in range(500)}
        sizes = save(store.values(), store.keys(), folder=folder, verbose=False)
        print(f"saved {len(sizes)} files, {sum(sizes):,} bytes")

        paths = sorted(folder.glob("*.bin"))
        digests = fingerprint(paths)
        assert digests[0] == hashlib.sha256(store[paths[0].name]).hexdigest()
        print(f"fingerprinted {len(digests)} files, {len(set(digests))} distinct contents")

        compressed = compress(paths)
        print(f"compressed {sum(sizes):,} bytes into {sum(compressed):,}")
    print("files_io ok")


if __name__ == "__main__":
    main()
