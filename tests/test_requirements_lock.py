"""The project's own environment is exactly requirements.lock (what CI tested is what a new machine gets)."""

import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _check_lock():
    spec = importlib.util.spec_from_file_location("check_lock", ROOT / "devtools" / "check_lock.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_lock_pins_every_package_with_hashes_and_the_cpu_torch():
    text = (ROOT / "requirements.lock").read_text()
    pins = _check_lock().locked_versions(text)
    assert pins["torch"] == "2.13.0+cpu"
    assert {"pandas", "pyarrow", "ray", "mlflow", "numpy", "setuptools"} <= set(pins)
    assert not any(name.startswith("nvidia-") for name in pins)
    pinned_lines = [line for line in text.splitlines() if "==" in line and not line.startswith((" ", "#"))]
    assert len(pinned_lines) == len(pins) and all(line.endswith("\\") for line in pinned_lines)  # hashes follow


def test_differences_name_missing_other_version_and_unlocked_packages():
    check = _check_lock()
    locked = check.locked_versions("pandas==3.1.1 \\\n    --hash=sha256:ab\nNumPy==2.4.6\n")
    assert locked == {"pandas": "3.1.1", "numpy": "2.4.6"}
    lines = check.lock_differences(locked, {"pandas": "2.3.0", "rich": "14.0", "pip": "25.3", "s4op": "0.1.0"})
    assert lines == ["numpy==2.4.6 is locked but not installed", "pandas is 2.3.0, the lock says 3.1.1",
                     "rich==14.0 is installed but not in the lock"]


def test_this_environment_equals_the_lock():
    check = _check_lock()
    if Path(sys.prefix) != ROOT / ".venv":  # only the project's own .venv is made from the lock
        import pytest

        pytest.skip(f"running outside the project's venv ({sys.prefix})")
    locked = check.locked_versions((ROOT / "requirements.lock").read_text())
    assert check.lock_differences(locked, check.installed_versions()) == []
