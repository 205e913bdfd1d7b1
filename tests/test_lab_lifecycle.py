"""The lab role end to end on a small lab of its own: up, again, dirty recovery, down.

Needs root and about a minute (the image is cached by lab-up). Each check that nothing is
left looks for itself (ip, /proc/mounts, /proc/*/cmdline, /run) rather than trusting
podnet.lab.residue alone.

These tests share one lab, podnet-t, and several check that none of it is left: they must run
one after another. make unit's workers (pytest-xdist, --dist loadfile) take a file whole, so
this one runs on one worker; tests/conftest.py starts it first, being the slowest.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from podnet import lab

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(os.environ.get("VIRTUAL_ENV", ROOT / ".venv")) / "bin"
LAB = "podnet-t"
STATE = Path(f"/var/lib/podnet/labs/{LAB}")

pytestmark = [
    pytest.mark.lab,
    pytest.mark.skipif(os.geteuid() != 0, reason="the lab needs root"),
]

HOSTS = """\
all:
  children:
    lab:
      children:
        nodes:
          hosts:
{hosts}
"""


def make_inventory(tmp: Path, hosts: dict[str, str]) -> Path:
    inv = tmp / "inventory"
    shutil.copytree(ROOT / "inventory" / "lab" / "group_vars", inv / "group_vars")
    lines = "".join(
        f"            {n}:\n              ansible_host: {a}\n" for n, a in hosts.items()
    )
    (inv / "hosts.yml").write_text(HOSTS.format(hosts=lines))
    return inv


def ansible(tool: str, inv: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "PODNET_LAB": LAB,
        "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"),
        "PATH": f"{VENV_BIN}:{os.environ['PATH']}",
        "ANSIBLE_NOCOLOR": "1",
    }
    return subprocess.run(
        [str(VENV_BIN / tool), "-i", str(inv), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=900,
    )


def adhoc(inv: Path, host: str, module: str, args: str) -> subprocess.CompletedProcess[str]:
    """An ad-hoc module run as root on a lab host (the login user becomes root with sudo)."""
    return ansible("ansible", inv, host, "--become", "-m", module, "-a", args)


def recap(out: str, host: str) -> dict[str, int]:
    m = re.search(rf"^{host}\s+: (.*)$", out, re.M)
    assert m, out[-2000:]
    return {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", m.group(1))}


def independent_residue() -> list[str]:
    found = []
    own_netns = Path("/proc/self/ns/net").readlink()
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    found += [f"netns {line}" for line in netns.splitlines() if line.split()[0] == LAB]
    found += [
        f"mount {line}"
        for line in Path("/proc/mounts").read_text().splitlines()
        if str(STATE) in line
    ]
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if str(STATE) in cmd or f"/run/netns/{LAB} " in cmd:
                found.append(f"process {proc.name} {cmd}")
            # SSH ProxyCommands (nsenter execs nc) left in the lab's namespace keep it alive;
            # this lab's hosts only (a demo lab's kept SSH connections are not this lab's)
            elif cmd.startswith(("nc 192.168.56.21 ", "nc 192.168.56.22 ")):
                with contextlib.suppress(OSError):
                    if (proc / "ns/net").readlink() != own_netns:
                        found.append(f"process {proc.name} {cmd} in another netns")
    for base in ("/run/systemd/nspawn/propagate", "/run/systemd/nspawn/unix-export"):
        if Path(base).is_dir():
            mine = {lab.machine_name(LAB, h) for h in ("t1", "t2")}
            found += [f"runtime {p}" for p in Path(base).iterdir() if p.name in mine]
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    found += [f"link {line}" for line in links.splitlines() if ": vb-" in line]
    if STATE.exists():
        found.append(f"state {STATE} (keys, roots)")
    return found


def nspawns_serving(host: str) -> list[int]:
    """PIDs of the systemd-nspawn processes running this lab's ``host`` (its root in their
    arguments), found in /proc rather than through podnet.lab."""
    root = str(STATE / "nodes" / host / "root")
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                argv = (proc / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            words = [a.decode(errors="replace") for a in argv]
            if Path(words[0]).name == "systemd-nspawn" and root in words:
                found.append(int(proc.name))
    return sorted(found)


def parent(pid: int) -> int:
    """The parent PID of ``pid`` (from /proc/PID/stat, after the command name)."""
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


@pytest.fixture
def lab_inventory(tmp_path: Path) -> Iterator[Path]:
    inv = make_inventory(tmp_path, {"t1": "192.168.56.21", "t2": "192.168.56.22"})
    yield inv
    ansible("ansible-playbook", inv, "playbooks/lab-down.yml")


def test_lab_up_twice_recover_from_sigkill_and_down_leaves_nothing(lab_inventory: Path) -> None:
    up = ansible("ansible-playbook", lab_inventory, "playbooks/lab-up.yml")
    assert up.returncode == 0, up.stdout[-3000:]
    again = ansible("ansible-playbook", lab_inventory, "playbooks/lab-up.yml")
    assert again.returncode == 0, again.stdout[-3000:]
    assert recap(again.stdout, "localhost")["changed"] == 0, again.stdout[-3000:]

    ping = ansible("ansible", lab_inventory, "lab", "-m", "ansible.builtin.ping")
    assert ping.returncode == 0 and ping.stdout.count("SUCCESS") == 2, ping.stdout
    # VM-shaped: the inventory's login user on its port, root only through sudo, no root login
    whoami = ansible("ansible", lab_inventory, "t1", "-m", "ansible.builtin.command",
                     "-a", "id -un")
    assert whoami.returncode == 0 and "\ndebian" in whoami.stdout, whoami.stdout
    root = ansible("ansible", lab_inventory, "t1", "-e", "ansible_user=root",
                   "-m", "ansible.builtin.ping")
    assert root.returncode != 0 and "Permission denied" in root.stdout, root.stdout

    # A reboot inside a host: systemd-nspawn exits with 133 and the launcher boots it again.
    launcher = int((STATE / "nodes/t2/nspawn.pid").read_text())
    marker = adhoc(
        lab_inventory,
        "t2",
        "ansible.builtin.shell",
        "touch /run/before-reboot && systemd-run --on-active=1 "
        "--timer-property=AccuracySec=100ms systemctl reboot",
    )
    assert marker.returncode == 0, marker.stdout
    time.sleep(4)
    back = adhoc(lab_inventory, "t2", "ansible.builtin.wait_for_connection", "timeout=60")
    assert back.returncode == 0, back.stdout
    gone = adhoc(lab_inventory, "t2", "ansible.builtin.command", "test ! -e /run/before-reboot")
    assert gone.returncode == 0, f"t2 did not reboot, /run/before-reboot is still there: {gone}"
    assert int((STATE / "nodes/t2/nspawn.pid").read_text()) == launcher

    # A dirty run: kill t1's launcher with SIGKILL; its container and mounts stay behind.
    # t1 is marked in /run first (a tmpfs: the mark survives only if t1 is not booted again).
    marked = adhoc(lab_inventory, "t1", "ansible.builtin.command", "touch /run/before-sigkill")
    assert marked.returncode == 0, marked.stdout
    pid = int((STATE / "nodes/t1/nspawn.pid").read_text())
    os.kill(pid, signal.SIGKILL)
    time.sleep(1)
    assert lab.mounts_under(STATE / "nodes/t1"), "the overlay should still be mounted"
    assert len(nspawns_serving("t1")) == 1, "the killed launcher's systemd-nspawn should run on"
    recovered = ansible("ansible-playbook", lab_inventory, "playbooks/lab-up.yml")
    assert recovered.returncode == 0, recovered.stdout[-3000:]
    assert recap(recovered.stdout, "localhost")["changed"] >= 1
    ping = ansible("ansible", lab_inventory, "t1", "-m", "ansible.builtin.ping")
    assert ping.returncode == 0, ping.stdout
    # booted again, not adopted as it ran: the mark is gone, and one systemd-nspawn serves
    # t1, the child of the launcher lab-up started (the killed one's was stopped)
    gone = adhoc(lab_inventory, "t1", "ansible.builtin.command", "test ! -e /run/before-sigkill")
    assert gone.returncode == 0, f"t1 did not boot again, /run/before-sigkill is there: {gone}"
    launcher = int((STATE / "nodes/t1/nspawn.pid").read_text())
    serving = nspawns_serving("t1")
    assert [parent(p) for p in serving] == [launcher], (
        f"systemd-nspawn processes serving t1: {serving}, want one child of {launcher}")

    down = ansible("ansible-playbook", lab_inventory, "playbooks/lab-down.yml")
    assert down.returncode == 0, down.stdout[-3000:]
    assert independent_residue() == []
    assert lab.residue(LAB, STATE, ["t1", "t2"]) == []


def test_lab_down_when_nothing_is_up_is_a_no_op(tmp_path: Path) -> None:
    inv = make_inventory(tmp_path, {"t1": "192.168.56.21"})
    down = ansible("ansible-playbook", inv, "playbooks/lab-down.yml")
    assert down.returncode == 0, down.stdout[-3000:]
    assert recap(down.stdout, "localhost")["changed"] == 0


@pytest.mark.parametrize(
    ("hosts", "message"),
    [
        ({"t1": "192.168.56.21", "T1": "192.168.56.22"}, "T1: duplicate host name"),
        (
            {"t1": "192.168.56.21", "t2": "192.168.56.21"},
            "t2: ansible_host 192.168.56.21 is already used by t1",
        ),
        ({"t1": "10.9.9.9"}, "t1: ansible_host 10.9.9.9 is outside lab_underlay_cidr"),
    ],
)
def test_bad_inventory_stops_lab_up_before_anything_is_created(
    tmp_path: Path, hosts: dict[str, str], message: str
) -> None:
    inv = make_inventory(tmp_path, hosts)
    up = ansible("ansible-playbook", inv, "playbooks/lab-up.yml")
    assert up.returncode != 0
    assert message in up.stdout.replace("\n", " ").replace("  ", " "), up.stdout[-3000:]
    assert independent_residue() == []


def test_too_many_hosts_stops_lab_up(tmp_path: Path) -> None:
    inv = make_inventory(tmp_path, {f"t{i}": f"192.168.56.{30 + i}" for i in range(17)})
    up = ansible("ansible-playbook", inv, "playbooks/lab-up.yml")
    assert up.returncode != 0
    assert "more than lab_max_hosts=16" in up.stdout, up.stdout[-3000:]
    assert independent_residue() == []
