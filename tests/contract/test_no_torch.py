"""The service side of the contract never imports torch (STYLE.md section C.7)."""

from __future__ import annotations

import subprocess
import sys

import pytest

SERVICE_MODULES = ["service.artifact", "service.main", "service.__main__"]


@pytest.mark.parametrize("module", SERVICE_MODULES)
def test_service_module_imports_without_torch(module: str) -> None:
    code = f"import sys, {module}; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_the_check_can_fail() -> None:
    code = "import sys, training.network.layers; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "True"
