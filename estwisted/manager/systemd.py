# -*- test-case-name: estwisted.manager.test.test_systemd -*-
"""
C{estore service install|uninstall}: the Linux counterpart of the guide's
C{EventStore.WindowsManager.exe install -InstanceName … -ManagerConfig …}.

    estore service install --instance-name es-cluster1 --manager-config /etc/estore/manager.yaml
    estore service install --instance-name es-node1 --node-config /etc/estore/database.yaml
    estore service uninstall --instance-name es-cluster1

C{install} writes the systemd unit C{<unit dir>/<instance name>.service}
(default unit directory C{/etc/systemd/system}) and starts nothing;
C{systemctl daemon-reload}, then C{systemctl start|stop <instance name>}
take the place of C{net start|stop}.  C{uninstall} removes the unit file.

The unit runs C{twistd -n} in the foreground (C{Type=simple}); with
C{KillMode=mixed} C{systemctl stop} sends SIGTERM to the manager alone, which
stops its nodes itself, and SIGKILL to whatever is left after
C{TimeoutStopSec}.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from typing import IO, Any, Optional

__all__ = ["ServiceError", "add_service_parser", "render_unit", "run_service"]

DEFAULT_UNIT_DIR = "/etc/systemd/system"
_INSTANCE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,200}$")


class ServiceError(Exception):
    """
    The unit could not be written or removed; the message is one line.
    """


def twistd_command(python: str = sys.executable) -> list[str]:
    """
    How to run twistd with this installation: the C{twistd} script next to
    the interpreter when there is one.
    """
    script = os.path.join(os.path.dirname(python), "twistd")
    if os.access(script, os.X_OK):
        return [script]
    return [python, "-c", "from twisted.scripts.twistd import run; run()"]


def _quote(word: str) -> str:
    if word and not re.search(r"[\s\"'\\;$%]", word):
        return word
    escaped = word.replace("\\", "\\\\").replace('"', '\\"').replace("%", "%%")
    escaped = escaped.replace("$", "$$")
    return f'"{escaped}"'


def render_unit(
    instance_name: str,
    kind: str,
    config_path: str,
    twistd: list[str],
    working_directory: str = "/",
    user: Optional[str] = None,
) -> str:
    """
    The text of the unit.

    @param kind: C{"manager"} or C{"node"}.
    @param config_path: the manager's or node's YAML file (absolute).
    """
    plugin, description = {
        "manager": ("estore-manager", "Event Store Manager"),
        "node": ("estore", "Event Store Node"),
    }[kind]
    command = [*twistd, "-n", "--pidfile=", plugin, "--config", config_path]
    lines = [
        "# Written by: estore service install; remove with: estore service uninstall "
        f"--instance-name {instance_name}",
        "[Unit]",
        f"Description={description} ({instance_name})",
        "Wants=network-online.target",
        "After=network-online.target",
        "",
        "[Service]",
        "Type=simple",
        "ExecStart=" + " ".join(_quote(w) for w in command),
        f"WorkingDirectory={working_directory}",
        "Environment=PYTHONUNBUFFERED=1",
        "KillMode=mixed",
        "TimeoutStopSec=60",
        "Restart=on-failure",
        "RestartSec=5",
    ]
    if user:
        lines.append(f"User={user}")
    lines += ["", "[Install]", "WantedBy=multi-user.target", ""]
    return "\n".join(lines)


def add_service_parser(commands: Any) -> None:
    """
    Add C{service install|uninstall} to the C{estore} argument parser.
    """
    service = commands.add_parser(
        "service", help="install or uninstall a systemd unit for a manager or node"
    )
    actions = service.add_subparsers(dest="action", metavar="ACTION")
    actions.required = True
    install = actions.add_parser("install", help="write the unit (starts nothing)")
    install.add_argument("--instance-name", required=True, help="the unit's name")
    which = install.add_mutually_exclusive_group(required=True)
    which.add_argument("--manager-config", help="a manager's YAML file")
    which.add_argument("--node-config", help="a database node's YAML file")
    install.add_argument("--user", default=None, help="run as this user")
    install.add_argument("--working-directory", default="/", help="default: /")
    install.add_argument("--unit-dir", default=DEFAULT_UNIT_DIR,
                         help=f"default: {DEFAULT_UNIT_DIR}")
    install.add_argument("--force", action="store_true", help="overwrite an existing unit")
    uninstall = actions.add_parser("uninstall", help="remove the unit (stop it first)")
    uninstall.add_argument("--instance-name", required=True)
    uninstall.add_argument("--unit-dir", default=DEFAULT_UNIT_DIR,
                           help=f"default: {DEFAULT_UNIT_DIR}")


def _unit_path(args: argparse.Namespace) -> str:
    name = args.instance_name
    if not _INSTANCE.match(name):
        raise ServiceError(f"instance name {name!r} is not a valid unit name")
    return os.path.join(args.unit_dir, f"{name}.service")


def run_service(args: argparse.Namespace, out: IO[str]) -> None:
    """
    Perform C{estore service install|uninstall}.

    @raise ServiceError: one line.
    """
    path = _unit_path(args)
    if args.action == "uninstall":
        try:
            os.remove(path)
        except FileNotFoundError:
            raise ServiceError(f"no unit {path} to remove") from None
        except OSError as e:
            raise ServiceError(f"cannot remove {path}: {e.strerror}") from None
        out.write(f"removed {path}; run: systemctl daemon-reload\n")
        return
    kind = "manager" if args.manager_config else "node"
    config = os.path.abspath(args.manager_config or args.node_config)
    if not os.path.isfile(config):
        raise ServiceError(f"configuration file {config} does not exist")
    if os.path.exists(path) and not args.force:
        raise ServiceError(f"{path} exists (use --force to overwrite)")
    text = render_unit(args.instance_name, kind, config, twistd_command(),
                       args.working_directory, args.user)
    try:
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
    except OSError as e:
        raise ServiceError(f"cannot write {path}: {e.strerror}") from None
    out.write(
        f"wrote {path}; nothing was started. Run: systemctl daemon-reload && "
        f"systemctl start {args.instance_name} (systemctl enable {args.instance_name} "
        "to start it at boot)\n"
    )
