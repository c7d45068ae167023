"""Screenshot the TensorBoard dashboard of a run in headless Chromium (regenerates docs/tensorboard_*.png).

    python train.py experiment=quickstart logger=tensorboard hydra.run.dir=runs/quickstart_tb
    python docs/screenshot_dashboards.py runs/quickstart_tb

Starts ``tensorboard --logdir <run>/tensorboard`` on a free local port, opens the Custom Scalars and the
Scalars tabs in Chromium (``/usr/bin/chromium``, Debian package ``chromium``) and writes
``docs/tensorboard_custom_scalars.png`` and ``docs/tensorboard_scalars.png``.
"""

from __future__ import annotations

import argparse
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

DOCS = Path(__file__).resolve().parent
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--hide-scrollbars"]


def free_port() -> int:
    with socket.socket() as handle:
        handle.bind(("127.0.0.1", 0))
        return handle.getsockname()[1]


def wait_for(url: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url, timeout=2)
            return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"TensorBoard did not answer at {url}")


def screenshot(url: str, path: Path, size: str, chromium: str, profile: Path) -> None:
    subprocess.run([chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--window-size={size}",
                    "--virtual-time-budget=20000", f"--screenshot={path}", url], check=True, capture_output=True,
                   timeout=180)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    args = parser.parse_args()
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "tensorboard.main", "--logdir", str(args.run_dir / "tensorboard"),
                               "--port", str(port), "--host", "127.0.0.1"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        base = f"http://127.0.0.1:{port}/"
        wait_for(base)
        time.sleep(5)  # let TensorBoard load the event files
        profile = DOCS / ".chromium-profile"
        screenshot(base + "?darkMode=false#custom_scalars", DOCS / "tensorboard_custom_scalars.png", "1600,2200",
                   args.chromium, profile)
        screenshot(base + "?darkMode=false#scalars&tagFilter=invariance%2Fcontrast", DOCS / "tensorboard_scalars.png",
                   "1600,1200", args.chromium, profile)
    finally:
        server.terminate()
        server.wait(timeout=30)
    print(f"wrote {DOCS / 'tensorboard_custom_scalars.png'} and {DOCS / 'tensorboard_scalars.png'}")


if __name__ == "__main__":
    main()
