# -*- test-case-name: estwisted.manager.test.test_systemd -*-
"""
Tests for L{estwisted.manager.systemd}: C{estore service install|uninstall}.
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess

from twisted.trial.unittest import SkipTest, SynchronousTestCase

from estwisted.manager.systemd import render_unit
from estwisted.node.cli import main


class ServiceTests(SynchronousTestCase):
    """
    The unit is written, verified by systemd, refused twice, and removed.
    """

    def setUp(self) -> None:
        self.dir = os.path.abspath(self.mktemp())
        os.makedirs(self.dir)
        self.config = os.path.join(self.dir, "manager.yaml")
        with open(self.config, "w") as f:
            f.write("EnableWatchdog: false\n")

    def run_cli(self, *args: str) -> tuple[int, str, str]:
        out, err = io.StringIO(), io.StringIO()
        code = main(list(args), stdout=out, stderr=err)
        return code, out.getvalue(), err.getvalue()

    def test_render(self) -> None:
        """
        The unit runs twistd in the foreground with the manager plugin and
        lets the manager stop its nodes (KillMode=mixed).
        """
        text = render_unit("es-cluster1", "manager", "/etc/estore/manager.yaml", ["/bin/twistd"])
        self.assertIn("Description=Event Store Manager (es-cluster1)\n", text)
        self.assertIn("ExecStart=/bin/twistd -n --pidfile= estore-manager --config "
                      "/etc/estore/manager.yaml\n", text)
        self.assertIn("KillMode=mixed\n", text)
        node = render_unit("es-node1", "node", "/etc/estore/my db.yaml", ["/bin/twistd"])
        self.assertIn('estore --config "/etc/estore/my db.yaml"', node)

    def test_installUninstall(self) -> None:
        """
        C{install} writes C{<name>.service}, starts nothing, refuses to
        overwrite; C{uninstall} removes it.
        """
        code, out, err = self.run_cli("service", "install", "--instance-name", "es-cluster1",
                                      "--manager-config", self.config, "--unit-dir", self.dir)
        self.assertEqual((code, err), (0, ""))
        self.assertIn("nothing was started", out)
        unit = os.path.join(self.dir, "es-cluster1.service")
        with open(unit) as f:
            self.assertIn(f"--config {self.config}", f.read())
        code, out, err = self.run_cli("service", "install", "--instance-name", "es-cluster1",
                                      "--manager-config", self.config, "--unit-dir", self.dir)
        self.assertEqual(code, 1)
        self.assertIn("exists", err)
        self.assertEqual(self.run_cli("service", "uninstall", "--instance-name", "es-cluster1",
                                      "--unit-dir", self.dir)[0], 0)
        self.assertFalse(os.path.exists(unit))
        code, _, err = self.run_cli("service", "uninstall", "--instance-name", "es-cluster1",
                                    "--unit-dir", self.dir)
        self.assertEqual(code, 1)

    def test_missingConfigRefused(self) -> None:
        code, _, err = self.run_cli("service", "install", "--instance-name", "x",
                                    "--node-config", "/nonexistent.yaml", "--unit-dir", self.dir)
        self.assertEqual(code, 1)
        self.assertIn("/nonexistent.yaml", err)

    def test_systemdAnalyzeVerify(self) -> None:
        """
        The written unit passes C{systemd-analyze verify}.
        """
        analyze = shutil.which("systemd-analyze")
        if analyze is None:
            raise SkipTest("systemd-analyze is not installed")
        self.run_cli("service", "install", "--instance-name", "es-cluster1",
                     "--manager-config", self.config, "--unit-dir", self.dir)
        completed = subprocess.run([analyze, "verify", os.path.join(self.dir,
                                                                    "es-cluster1.service")],
                                   capture_output=True, timeout=60)
        self.assertEqual(completed.returncode, 0, completed.stderr.decode())
