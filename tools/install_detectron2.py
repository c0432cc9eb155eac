"""Install Detectron2's pure-Python code as a pip-managed distribution named ``detectron2``.

Detectron2 is not published on PyPI. Its Python sources ship in the PyPI wheel
``sal-detectron2`` (a redistribution of Detectron2's main branch, tagged cp310 and
bundling a compiled ``_C`` extension built for CUDA 12). This script:

1. does nothing if ``import detectron2`` already works in the target interpreter;
2. otherwise downloads that wheel (or takes ``--wheel FILE``), checks its sha256,
3. rewrites it as ``detectron2-<version>-py3-none-any.whl`` without ``_C`` and without the
   wheel's top-level ``tools`` package, and
4. ``pip install``s the rewritten wheel, so ``pip show detectron2`` / ``pip uninstall detectron2`` work.

Without ``_C`` Detectron2 runs on CPU and GPU; only its compiled ops (deformable conv,
rotated boxes, the fast COCO evaluator) are missing, and this project does not use them.
"""

from __future__ import annotations

import argparse
import base64
import csv
import hashlib
import io
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

WHEEL_NAME = "sal-detectron2"
WHEEL_VERSION = "0.7.2"
WHEEL_SHA256 = "491af0c7f79bdb2d178e46f6cb16a97c4ac968d45c41ea3f6b6435d59bbee561"
DIST_NAME = "detectron2"


class InstallError(RuntimeError):
    pass


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def detectron2_importable(python: str) -> bool:
    code = "import detectron2, detectron2.config, detectron2.modeling"
    return subprocess.run([python, "-c", code], capture_output=True).returncode == 0


def download_wheel(python: str, dest: Path) -> Path:
    """Fetch the sal-detectron2 wheel from the package registry into ``dest``."""
    cmd = [
        python, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
        "--python-version", "3.10", "--implementation", "cp",
        f"{WHEEL_NAME}=={WHEEL_VERSION}", "-d", str(dest),
    ]  # fmt: skip
    result = subprocess.run(cmd, capture_output=True, text=True)
    wheels = sorted(dest.glob("*.whl"))
    if result.returncode != 0 or not wheels:
        raise InstallError(
            f"could not download {WHEEL_NAME}=={WHEEL_VERSION} from the package registry "
            f"(is it reachable?).\n{result.stderr.strip()}"
        )
    return wheels[0]


def _record_line(name: str, data: bytes) -> list[str]:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return [name, f"sha256={digest}", str(len(data))]


def _keep(name: str) -> bool:
    top = name.split("/", 1)[0]
    if top != "detectron2":
        return False
    leaf = name.rsplit("/", 1)[-1]
    return not (leaf.startswith("_C.") and leaf.endswith((".so", ".pyd")))


def _metadata(original: str, version: str) -> str:
    lines = []
    for line in original.splitlines():
        if line.startswith("Name:"):
            line = f"Name: {DIST_NAME}"
        elif line.startswith("Version:"):
            line = f"Version: {version}"
        lines.append(line)
    return "\n".join(lines) + "\n"


def rewrite_wheel(src: Path, out_dir: Path) -> Path:
    """Write a pure-Python ``detectron2`` wheel from ``src``; return its path."""
    with zipfile.ZipFile(src) as zin:
        names = zin.namelist()
        dist_info = [n for n in names if n.endswith(".dist-info/METADATA")]
        if len(dist_info) != 1:
            raise InstallError(f"{src.name} is not a wheel with one METADATA file")
        old_info = dist_info[0].split("/", 1)[0]
        metadata = zin.read(dist_info[0]).decode()
        version = next(
            (line.split(":", 1)[1].strip() for line in metadata.splitlines() if line.startswith("Version:")),
            WHEEL_VERSION,
        )
        new_info = f"{DIST_NAME}-{version}.dist-info"
        out = out_dir / f"{DIST_NAME}-{version}-py3-none-any.whl"
        record: list[list[str]] = []
        with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zout:
            for name in names:
                if _keep(name):
                    data = zin.read(name)
                    zout.writestr(name, data)
                    record.append(_record_line(name, data))
            files = {
                "METADATA": _metadata(metadata, version).encode(),
                "WHEEL": (
                    b"Wheel-Version: 1.0\nGenerator: onestage-seg install_detectron2\n"
                    b"Root-Is-Purelib: true\nTag: py3-none-any\n"
                ),
                "top_level.txt": b"detectron2\n",
            }
            for leaf, data in files.items():
                zout.writestr(f"{new_info}/{leaf}", data)
                record.append(_record_line(f"{new_info}/{leaf}", data))
            buf = io.StringIO()
            csv.writer(buf, lineterminator="\n").writerows(record + [[f"{new_info}/RECORD", "", ""]])
            zout.writestr(f"{new_info}/RECORD", buf.getvalue())
    if not any(n.startswith("detectron2/") for n in names):
        raise InstallError(f"{src.name} holds no detectron2 package")
    del old_info
    return out


def install(python: str, wheel: Path | None, expected_sha256: str, force: bool = False) -> str:
    """Install Detectron2 into ``python``'s environment; return a one-line summary."""
    if not force and detectron2_importable(python):
        return "detectron2 already importable: kept as it is"
    with tempfile.TemporaryDirectory() as tmp:
        tmp_dir = Path(tmp)
        if wheel is None:
            wheel = download_wheel(python, tmp_dir)
        if not wheel.is_file():
            raise InstallError(f"wheel file not found: {wheel}")
        actual = sha256_of(wheel)
        if actual != expected_sha256:
            raise InstallError(
                f"sha256 mismatch for {wheel.name}: expected {expected_sha256}, got {actual}; "
                "refusing to install"
            )
        pure = rewrite_wheel(wheel, tmp_dir)
        cmd = [python, "-m", "pip", "install", "--no-deps", "--force-reinstall", str(pure)]
        result = subprocess.run(cmd, capture_output=True, text=True)
        if result.returncode != 0:
            raise InstallError(f"pip install of {pure.name} failed:\n{result.stderr.strip()}")
        return f"installed {pure.name} (without _C)"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--python", default=sys.executable, help="interpreter whose environment to install into"
    )
    parser.add_argument("--wheel", type=Path, help="use this sal-detectron2 wheel instead of downloading it")
    parser.add_argument("--sha256", default=WHEEL_SHA256, help="expected sha256 of the wheel")
    parser.add_argument("--force", action="store_true", help="install even if detectron2 already imports")
    args = parser.parse_args(argv)
    try:
        print(install(args.python, args.wheel, args.sha256, args.force))
    except InstallError as e:
        print(f"install_detectron2: error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
