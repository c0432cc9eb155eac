"""tools/install_detectron2.py on a small fake sal-detectron2 wheel, in a throwaway virtualenv."""

import hashlib
import os
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

from tools import install_detectron2 as installer

FAKE_MODULES = {
    "detectron2/__init__.py": "__version__ = '0.7.2'\n",
    "detectron2/config/__init__.py": "",
    "detectron2/modeling/__init__.py": "",
    "detectron2/_C.cpython-310-x86_64-linux-gnu.so": "not a real extension",
    "tools/train_net.py": "print('a top-level tools package that must not be installed')\n",
}


def make_fake_wheel(directory: Path) -> Path:
    path = directory / "sal_detectron2-0.7.2-cp310-none-any.whl"
    info = "sal_detectron2-0.7.2.dist-info"
    with zipfile.ZipFile(path, "w") as whl:
        for name, text in FAKE_MODULES.items():
            whl.writestr(name, text)
        whl.writestr(f"{info}/METADATA", "Metadata-Version: 2.1\nName: sal-detectron2\nVersion: 0.7.2\n")
        whl.writestr(f"{info}/WHEEL", "Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: cp310-none-any\n")
        whl.writestr(f"{info}/top_level.txt", "detectron2\ntools\n")
        whl.writestr(f"{info}/RECORD", "")
    return path


def test_rewrite_drops_compiled_extension_and_renames(tmp_path):
    pure = installer.rewrite_wheel(make_fake_wheel(tmp_path), tmp_path)
    assert pure.name == "detectron2-0.7.2-py3-none-any.whl"
    with zipfile.ZipFile(pure) as whl:
        names = set(whl.namelist())
        assert "detectron2/__init__.py" in names and "detectron2/modeling/__init__.py" in names
        assert not any("_C." in n for n in names)
        assert not any(n.startswith("tools/") for n in names)
        metadata = whl.read("detectron2-0.7.2.dist-info/METADATA").decode()
        assert "Name: detectron2\n" in metadata and "Version: 0.7.2\n" in metadata
        # every RECORD entry carries the right hash and size
        for line in whl.read("detectron2-0.7.2.dist-info/RECORD").decode().splitlines():
            name, digest, size = line.split(",")
            if name.endswith("RECORD"):
                continue
            data = whl.read(name)
            assert int(size) == len(data)
            assert digest == installer._record_line(name, data)[1]


def test_hash_mismatch_is_refused(tmp_path):
    wheel = make_fake_wheel(tmp_path)
    with pytest.raises(installer.InstallError, match="sha256 mismatch"):
        installer.install(sys.executable, wheel, expected_sha256="0" * 64, force=True)


def test_unreachable_registry_gives_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path))
    with pytest.raises(installer.InstallError, match="could not download sal-detectron2"):
        installer.download_wheel(sys.executable, tmp_path)


def test_installs_as_pip_managed_distribution(tmp_path):
    env_dir = tmp_path / "env"
    venv.create(env_dir, with_pip=True)
    python = str(env_dir / "bin" / "python")
    wheel = make_fake_wheel(tmp_path)
    sha = hashlib.sha256(wheel.read_bytes()).hexdigest()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    assert not installer.detectron2_importable(python)
    assert "without _C" in installer.install(python, wheel, sha)
    show = subprocess.run(
        [python, "-m", "pip", "show", "detectron2"], capture_output=True, text=True, env=env
    )
    assert show.returncode == 0 and "Version: 0.7.2" in show.stdout
    check = (
        "import detectron2, importlib.util as u; print(u.find_spec('detectron2._C'), u.find_spec('tools'))"
    )
    out = subprocess.run([python, "-c", check], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert out.stdout.split() == ["None", "None"]
    # idempotent: a second run keeps what imports
    assert "already importable" in installer.install(python, wheel, sha)
    uninstall = subprocess.run(
        [python, "-m", "pip", "uninstall", "-y", "detectron2"], capture_output=True, env=env
    )
    assert uninstall.returncode == 0 and not installer.detectron2_importable(python)
