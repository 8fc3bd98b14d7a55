"""Install the locked OpenSeadragon from the npm registry without npm.

    python wsi_seg/review/vendor/fetch_openseadragon.py

Used by the Makefile when npm is not on the machine: downloads the tarball of the
version in package-lock.json from registry.npmjs.org, checks it against the lock
file's sha512 integrity, and unpacks it where `npm ci` would
(node_modules/openseadragon). Nothing is written if the check fails.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import shutil
import sys
import tarfile
import tempfile
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
REGISTRY = "https://registry.npmjs.org"


def main() -> int:
    lock = json.loads((HERE / "package-lock.json").read_text())
    entry = lock["packages"]["node_modules/openseadragon"]
    version, integrity = entry["version"], entry["integrity"]
    algorithm, expected = integrity.split("-", 1)
    if algorithm != "sha512":
        sys.exit(f"unsupported integrity algorithm {algorithm!r} in package-lock.json")
    url = entry.get("resolved") or f"{REGISTRY}/openseadragon/-/openseadragon-{version}.tgz"
    with urllib.request.urlopen(url, timeout=120) as response:
        data = response.read()
    if base64.b64encode(hashlib.sha512(data).digest()).decode() != expected:
        sys.exit(f"{url}: checksum does not match package-lock.json; not installed")
    target = HERE / "node_modules" / "openseadragon"
    with tempfile.TemporaryDirectory(dir=HERE) as tmp:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
            tar.extractall(tmp, filter="data")
        if target.exists():
            shutil.rmtree(target)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(Path(tmp) / "package"), target)
    print(f"installed openseadragon {version} into {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
