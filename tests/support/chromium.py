"""Debian's headless chromium (scripts/install_chromium.sh, `make chromium`) as a fixture:
screenshots and DOM dumps of the HTML pages. Missing, the tests using it skip, or fail when
`SPD_MCP_REQUIRE_CHROMIUM` is set (CI)."""

import shutil
import struct
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.requirements import unavailable

REQUIRE_ENV = "SPD_MCP_REQUIRE_CHROMIUM"


def png_size(path: Path) -> tuple[int, int]:
    """(width, height) from a PNG's IHDR chunk."""
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    return struct.unpack(">II", head[16:24])


@dataclass(frozen=True)
class Chromium:
    exe: str
    profile: Path

    def _run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        argv = [
            self.exe,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            "--no-first-run",
            "--disable-extensions",
            "--disable-background-networking",
            f"--user-data-dir={self.profile}",
            *args,
        ]
        proc = subprocess.run(
            argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
        )
        assert proc.returncode == 0, (
            f"{' '.join(argv)} exited {proc.returncode}: {proc.stderr[-2000:]}"
        )
        return proc

    def screenshot(self, url: str, png: Path, width: int, height: int) -> tuple[int, int]:
        """A PNG of the page at ``url`` in a width x height window; its size."""
        png.parent.mkdir(parents=True, exist_ok=True)
        png.unlink(missing_ok=True)
        self._run(f"--screenshot={png}", f"--window-size={width},{height}", url)
        assert png.is_file() and png.stat().st_size > 1000, f"chromium wrote no screenshot of {url}"
        return png_size(png)

    def dump_dom(self, url: str, budget_ms: int = 2000) -> str:
        """The DOM after load (and after ``budget_ms`` of virtual time for any script of the
        page)."""
        return self._run(f"--virtual-time-budget={budget_ms}", "--dump-dom", url).stdout


@pytest.fixture(scope="session")
def chromium(tmp_path_factory: pytest.TempPathFactory) -> Chromium:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        unavailable(
            REQUIRE_ENV, "chromium is not installed (`make chromium`: scripts/install_chromium.sh)"
        )
    return Chromium(str(exe), tmp_path_factory.mktemp("chromium-profile"))
