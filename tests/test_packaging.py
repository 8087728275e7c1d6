"""Desktop integration: validated metadata, the per-user installer and its uninstaller, autostart."""

import os
import shutil
import subprocess

import pytest

from tests.conftest import ROOT

LINUX = ROOT / "packaging" / "linux"
APP_ID = "io.github.mneme.Mneme"


def test_desktop_file_and_metainfo_validate():
    for tool in ("desktop-file-validate", "appstreamcli"):
        if not shutil.which(tool):
            pytest.fail(f"{tool} is needed: `make test` installs it")
    out = subprocess.run(["desktop-file-validate", LINUX / f"{APP_ID}.desktop"], capture_output=True, text=True)
    assert out.returncode == 0 and "error" not in out.stdout.lower(), out.stdout
    out = subprocess.run(["appstreamcli", "validate", "--no-net", LINUX / f"{APP_ID}.metainfo.xml"],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_icons_exist_in_every_size():
    from PIL import Image

    for size in (16, 32, 48, 64, 128, 256, 512):
        with Image.open(LINUX / "icons" / f"mneme-{size}.png") as img:
            assert img.size == (size, size)
    assert "<svg" in (LINUX / "icons" / "mneme.svg").read_text()


def test_install_and_uninstall_for_the_user(tmp_path, isolated_home):
    env = {**os.environ, "HOME": str(tmp_path / "user"), "XDG_DATA_HOME": str(tmp_path / "user/share"),
           "XDG_CONFIG_HOME": str(tmp_path / "user/config")}
    isolated_home.mkdir(parents=True)
    (isolated_home / "memory.db").write_bytes(b"pretend memory")
    subprocess.run([ROOT / "packaging" / "install-linux.sh", "--autostart"], env=env, check=True,
                   capture_output=True)
    share = tmp_path / "user/share"
    desktop = (share / "applications" / f"{APP_ID}.desktop").read_text()
    assert "Exec=/" in desktop and "mneme-app" in desktop
    assert (share / "icons/hicolor/256x256/apps" / f"{APP_ID}.png").exists()
    assert (tmp_path / "user/config/autostart" / f"{APP_ID}.desktop").exists()
    assert os.access(tmp_path / "user/.local/bin/mneme", os.X_OK)
    out = subprocess.run([ROOT / "packaging" / "install-linux.sh", "--uninstall"], env=env, check=True,
                         capture_output=True, text=True).stdout
    assert "left as it is" in out
    left = [p for p in (tmp_path / "user").rglob("*") if (p.is_file() or p.is_symlink())
            and p.name != "mimeinfo.cache"]  # the desktop database cache is shared, not ours
    assert left == []
    assert (isolated_home / "memory.db").read_bytes() == b"pretend memory"


def test_autostart_toggle(tmp_path, monkeypatch):
    from mneme.app.autostart import XdgAutostart

    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "cfg"))
    auto = XdgAutostart()
    assert not auto.enabled()
    auto.set_enabled(True)
    text = auto.path().read_text()
    assert auto.enabled() and "Exec=" in text and "Name=Mneme" in text
    auto.set_enabled(False)
    assert not auto.enabled()


def test_wheel_has_every_layer_both_commands_and_the_vocabulary(tmp_path):
    import sys
    import zipfile

    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                    "-w", tmp_path, ROOT], check=True, capture_output=True)
    wheel = next(tmp_path.glob("mneme-*.whl"))
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        entry = next(z.read(n).decode() for n in names if n.endswith("entry_points.txt"))
    for module in ("mneme/core/store.py", "mneme/app/main.py", "mneme/capture/pipeline.py",
                   "mneme/models/llama.py", "mneme/models/data/minilm-vocab.txt"):
        assert module in names
    assert not any(n.startswith(("core/", "app/", "models/", "tests/")) for n in names)
    assert "mneme = mneme.app.cli:main" in entry and "mneme-app = mneme.app.main:gui_main" in entry
