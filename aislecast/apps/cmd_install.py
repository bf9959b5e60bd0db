"""``aislecast install gateway|hq``: lay a role out on a host for systemd.

What ``systemd/README.md`` walks through by hand, as one command: the system user, the
configuration and state directories with their modes, the commented starter config
(the text ``gateway init`` / ``hq init`` write, through the same writer), the systemd
unit and, for a gateway, the udev rule that lets the service open an NFC reader.

``--root DIR`` lays everything out under DIR instead of ``/`` (an image being built,
or a test); ``--dry-run`` only says what it would do. Creating the user and changing
owners needs root on the real system, so either is printed, not done, when not root
or with ``--root``. Nothing that exists is overwritten except the unit file, which is
ours (an operator's changes belong in ``systemctl edit``).
"""

from __future__ import annotations

import argparse
import os
import pwd
import shlex
import shutil
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Final

from aislecast.apps.configfile import config_exit_code, write_starter
from aislecast.kernel.errors import AislecastError, ConfigError
from gateway.config import starter_toml as gateway_starter

__all__ = ["NFC_RULES", "ROLES", "Role", "nfc_udev_rules", "register"]

INSTALLED_EXEC: Final = "/opt/aislecast/venv/bin/aislecast"  # what the units name
NFC_RULES: Final = "etc/udev/rules.d/60-aislecast-nfc.rules"
NFC_MODPROBE: Final = "etc/modprobe.d/aislecast-nfc.conf"
NFC_GROUP: Final = "plugdev"  # the gateway unit's SupplementaryGroups has it
# Kernel NFC drivers that claim these readers first (nfcpy then cannot open them):
# pn533_usb (PN533-based: ACR122U, SCL3711, RC-S360) and port100 (Sony RC-S380).
NFC_KERNEL_DRIVERS: Final = ("pn533_usb", "port100")


@dataclass(frozen=True, slots=True)
class Role:
    name: str
    user: str
    state_dir: str  # under /var/lib; the unit's StateDirectory
    state_mode: int
    unit: str
    config: str  # under /etc/aislecast

    def starter(self) -> str:
        if self.name == "gateway":
            return gateway_starter()
        # hq.config.starter_toml reads this same file, but importing hq.config loads
        # FastAPI (the hq extra), which a gateway-only host has not installed
        text = resources.files("hq").joinpath("starter.toml").read_text(encoding="utf-8")
        return text.replace('data_dir = "hq-data"', f'data_dir = "/var/lib/{self.state_dir}"', 1)

    def check(self, path: str, exe: str) -> str:
        if self.name == "gateway":
            return f"sudo -u {self.user} {exe} gateway check --config {path}"
        return f"sudo -u {self.user} {exe} hq init -o {path}   # the first admin and the CA"


ROLES: Final = {
    "gateway": Role("gateway", "aislecast", "aislecast", 0o750, "aislecast-gateway.service",
                    "gateway.toml"),
    "hq": Role("hq", "aislecast-hq", "aislecast-hq", 0o700, "aislecast-hq.service", "hq.toml"),
}

_HELP = textwrap.dedent(
    """\
    Lay out a store gateway or HQ on this host for systemd: the system user, the
    directories (/etc/aislecast 0750, /var/lib/aislecast 0750 or /var/lib/aislecast-hq
    0700), a commented starter config (kept if one exists), the unit in
    /etc/systemd/system and, for a gateway, a udev rule giving group plugdev the USB NFC
    readers nfcpy drives. It prints each step and what to do next; it starts nothing.

    examples:
      sudo aislecast install gateway
      sudo aislecast install hq --exec /srv/aislecast/venv/bin/aislecast
      aislecast install gateway --dry-run                  # what it would do
      aislecast install gateway --root /tmp/image          # under a directory, no root needed
    """
)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("install", help="lay out a gateway or HQ for systemd (user, dirs, "
                       "config, unit, udev)", description=_HELP,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("role", choices=sorted(ROLES))
    p.add_argument("--root", default="/", metavar="DIR",
                   help="install under DIR instead of / (default: %(default)s)")
    p.add_argument("--exec", dest="exe", default=INSTALLED_EXEC, metavar="PATH",
                   help="the aislecast program the unit runs (default: %(default)s)")
    p.add_argument("--dry-run", action="store_true", help="say what would be done, do nothing")
    p.set_defaults(func=config_exit_code(_install))


def nfc_udev_rules() -> str:
    """One rule per USB reader nfcpy has a driver for, read from nfcpy itself."""
    # nfcpy is the gateway extra's: imported here so `install hq` works without it
    from nfc.clf.device import usb_device_map  # noqa: PLC0415

    lines = ["# aislecast gateway: the USB NFC readers nfcpy drives, for group "
             f"{NFC_GROUP} (written by `aislecast install gateway`)"]
    for (vid, pid), driver in sorted(usb_device_map.items()):  # udev has no trailing comments
        lines += [f"# usb:{vid:04x}:{pid:04x}, nfcpy driver {driver}",
                  f'SUBSYSTEM=="usb", ATTRS{{idVendor}}=="{vid:04x}", '
                  f'ATTRS{{idProduct}}=="{pid:04x}", GROUP="{NFC_GROUP}", MODE="0660"']
    return "\n".join(lines) + "\n"


class _Installer:
    def __init__(self, root: Path, dry_run: bool, exe: str) -> None:
        self.root = root
        self.exe = exe
        self.dry = dry_run
        self.real = root.resolve() == Path("/")
        self.privileged = os.geteuid() == 0 and self.real

    def path(self, absolute: str) -> Path:
        return self.root / absolute.lstrip("/")

    def say(self, what: str) -> None:
        print(f"  {'would: ' if self.dry else ''}{what}")

    def _owner(self, path: Path, user: str, group: str) -> None:
        if self.privileged and not self.dry:
            shutil.chown(path, user, group)

    def user(self, role: Role) -> None:
        cmd = ["useradd", "--system", "--user-group", "--home-dir", f"/var/lib/{role.state_dir}",
               "--no-create-home", "--shell", "/usr/sbin/nologin", role.user]
        if not self.real:
            print(f"  skipped (--root): {shlex.join(cmd)}")
            return
        try:
            pwd.getpwnam(role.user)
        except KeyError:
            pass
        else:
            print(f"  user {role.user} exists; kept")
            return
        if not self.privileged:
            print(f"  skipped (not root): {shlex.join(cmd)}")
            return
        self.say(shlex.join(cmd))
        if not self.dry:
            subprocess.run(cmd, check=True)  # noqa: S603 - fixed arguments, no shell

    def directory(self, absolute: str, mode: int, user: str, group: str) -> None:
        path = self.path(absolute)
        owner = (f"{user}:{group}" if self.privileged
                 else f"owner unchanged ({'not root' if self.real else '--root'})")
        self.say(f"directory {path} {mode:04o} {owner}")
        if not self.dry:
            path.mkdir(parents=True, exist_ok=True)
            path.chmod(mode)
            self._owner(path, user, group)

    def config(self, role: Role) -> Path:
        path = self.path(f"/etc/aislecast/{role.config}")
        if path.exists():
            print(f"  {path} exists; kept")
            return path
        if self.dry:
            self.say(f"starter config {path} 0640")
        else:  # it says "wrote ..." itself
            write_starter(role.starter(), str(path), force=False, check=role.check("{path}", self.exe))
            path.chmod(0o640)
            self._owner(path, "root", role.user)
        return path

    def file(self, absolute: str, text: str, what: str) -> None:
        path = self.path(absolute)
        if path.exists() and path.read_text(encoding="utf-8") == text:
            print(f"  {what} {path} unchanged")
            return
        self.say(f"{what} {path} 0644")
        if not self.dry:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
            path.chmod(0o644)


def _unit(role: Role, exe: str) -> str:
    text = resources.files("aislecast.apps").joinpath("units", role.unit).read_text(encoding="utf-8")
    return text.replace(INSTALLED_EXEC, exe)


def _install(args: argparse.Namespace) -> int:
    role = ROLES[args.role]
    if not Path(args.exe).is_absolute():
        raise ConfigError("--exec", f"{args.exe!r} is not an absolute path",
                          hint=f"systemd needs one, e.g. {INSTALLED_EXEC}")
    inst = _Installer(Path(args.root), args.dry_run, args.exe)
    print(f"aislecast {role.name} under {inst.root}{' (dry run)' if inst.dry else ''}:")
    try:
        inst.user(role)
        inst.directory("/etc/aislecast", 0o750, "root", role.user)
        inst.directory(f"/var/lib/{role.state_dir}", role.state_mode, role.user, role.user)
        config = inst.config(role)
        inst.file(f"/etc/systemd/system/{role.unit}", _unit(role, args.exe), "unit")
        if role.name == "gateway":
            inst.file(f"/{NFC_RULES}", nfc_udev_rules(), "udev rule")
            inst.file(f"/{NFC_MODPROBE}", "".join(f"blacklist {m}\n" for m in NFC_KERNEL_DRIVERS),
                      "kernel NFC drivers off")
    except PermissionError as exc:
        raise AislecastError(f"cannot write {exc.filename} (permission denied)",
                             hint="run it as root, or pass --root DIR") from None
    except (OSError, subprocess.CalledProcessError) as exc:
        raise AislecastError(f"install stopped: {exc}") from None
    shown = "/" + str(config.relative_to(inst.root)) if not inst.real else str(config)
    steps = [f"edit {shown}: " + ("gateway, store, hq_public_key, [broker], [scanner]"
                                  if role.name == "gateway" else "[database], [broker], [http]"),
             role.check(shown, args.exe), "systemctl daemon-reload"]
    if role.name == "gateway":
        steps.append("udevadm control --reload && udevadm trigger   # the NFC reader's rule")
    steps.append(f"systemctl enable --now {role.unit}")
    print("next:\n" + "".join(f"  {s}\n" for s in steps), end="")
    sys.stdout.flush()
    return 0
