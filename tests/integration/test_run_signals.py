"""scripts/run.sh stops when told: SIGTERM, SIGINT and SIGHUP each stop the stack and every
program it started within 15 s, however it was started. A non-interactive shell starts it as a
background job (which inherits SIGINT ignored) or under setsid, and sends the signal to the PID
it got; every process of the stack is then checked by PID."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import psutil
import pytest

from scripts.stack import Program, stop
from tests.conftest import ROOT, RUN_LABEL, answers_http, free_port, wait_for

pytestmark = pytest.mark.integration

SHELL = """{launcher} scripts/run.sh {flags} -- --collector.containers.label-selector={label} >{log} 2>&1 &
pid=$!
echo $pid
read go
kill -{signal} $pid
wait $pid
echo "exit $?"
"""


@pytest.mark.parametrize(
    ("launcher", "signal"),
    [("", "TERM"), ("", "INT"), ("", "HUP"), ("setsid", "TERM")],
    ids=["job-TERM", "job-INT", "job-HUP", "setsid-TERM"],
)
def test_a_signal_to_run_sh_stops_every_program_it_started(tmp_path, launcher, signal):
    ports = {name: free_port() for name in ("exporter", "prometheus", "alertmanager", "grafana")}
    grafana = tmp_path / "bin" / "grafana"  # the stand-in of Grafana's API, on the PATH as Grafana
    grafana.parent.mkdir()
    grafana.write_text(f'#!/bin/sh\ncd {ROOT} && exec {sys.executable} -m tests.grafana_double "$@"\n')
    grafana.chmod(0o755)
    flags = " ".join(f"--{name}-port={port}" for name, port in ports.items())
    log = tmp_path / "run.log"
    log.touch()
    shell = subprocess.Popen(
        [
            "bash",
            "-c",
            SHELL.format(
                launcher=launcher,
                flags=f"--state={tmp_path / 'state'} {flags}",
                label=RUN_LABEL,
                log=log,
                signal=signal,
            ),
        ],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PATH": f"{grafana.parent}:{os.environ['PATH']}"},
    )
    processes: list[psutil.Process] = []
    try:
        assert shell.stdout is not None and shell.stdin is not None
        run_sh = psutil.Process(int(shell.stdout.readline()))
        wait_for(lambda: "stack is up" in log.read_text(), 90, 0.2, "the stack to start", log.read_text)
        for name, path in (
            ("exporter", "/-/ready"),
            ("prometheus", "/-/ready"),
            ("alertmanager", "/-/ready"),
        ):
            assert answers_http(f"http://127.0.0.1:{ports[name]}{path}")(), name
        processes += [run_sh, *run_sh.children(recursive=True)]
        commands = " ".join(" ".join(p.cmdline()) for p in processes)
        for program in ("prometheus ", "prometheus-alertmanager", "-m kato_exporter", "tests.grafana_double"):
            assert program in commands
        signalled = time.monotonic()
        shell.stdin.write("go\n")
        shell.stdin.flush()
        assert shell.stdout.readline().strip() == "exit 0", log.read_text()
        _, alive = psutil.wait_procs(processes, timeout=max(0.1, 15 - (time.monotonic() - signalled)))
        assert not alive, f"still running after 15 s: {[p.cmdline() for p in alive]}"
        assert time.monotonic() - signalled <= 15
        assert "stopped" in log.read_text()
    finally:
        if shell.poll() is None:
            shell.kill()
        for process in processes:  # never leave the stack behind a failed test
            if process.is_running():
                process.kill()


def test_a_program_that_ignores_sigterm_is_killed_and_that_is_logged(tmp_path, capfd):
    stubborn = Program(
        "stubborn", "", ["sh", "-c", "trap '' TERM; sleep 60 & wait; sleep 60"], tmp_path / "log"
    )
    stubborn.process = subprocess.Popen(stubborn.command, start_new_session=True)
    time.sleep(0.3)  # the trap is set
    started = time.monotonic()
    stop([stubborn], timeout=1)
    assert stubborn.process.poll() is not None
    assert time.monotonic() - started < 5
    assert "stubborn did not stop within 1s: killed" in capfd.readouterr().err
