import os
import sys

import pytest

from cdr_mediation.stack.process import Daemon, StackError, free_port, pid_alive, wait_until


def _daemon(tmp_path, marker="sleep-marker"):
    return Daemon(name="sleeper", pid_file=tmp_path / "sleeper.pid", log_file=tmp_path / "sleeper.log", marker=marker)


def _sleeper_argv():
    return [sys.executable, "-c", "import time, sys; print('up', flush=True); time.sleep(600)", "sleep-marker"]


def test_daemon_survives_in_its_own_session_and_stops_for_sure(tmp_path):
    daemon = _daemon(tmp_path)
    pid = daemon.start(_sleeper_argv())
    # Awaited, not asserted at once: under CI load `pid()` was seen to answer None right after the
    # start (twice in ~10 runs; /proc not yet showing the new command line is the suspect).
    wait_until(lambda: daemon.pid() == pid, timeout=10, what="daemon pid from its pid file")
    assert os.getpgid(pid) == pid
    wait_until(lambda: "up" in daemon.log_file.read_text(), timeout=10, what="sleeper log")
    daemon.stop()
    assert not pid_alive(pid)
    assert not daemon.pid_file.exists()


def test_a_fresh_daemon_object_finds_the_process_by_pid_file(tmp_path):
    # As after a crash of the shell that started the stack: only the pid file remains.
    pid = _daemon(tmp_path).start(_sleeper_argv())
    again = _daemon(tmp_path)
    assert again.pid() == pid
    again.stop()
    assert not pid_alive(pid)


def test_a_stale_pid_file_never_signals_an_unrelated_process(tmp_path):
    pid = _daemon(tmp_path).start(_sleeper_argv())
    stranger = _daemon(tmp_path, marker="some-other-server")
    assert stranger.pid() is None
    stranger.stop()  # must not touch the sleeper
    assert pid_alive(pid)
    _daemon(tmp_path).stop()


def test_missing_binary_is_a_clear_error(tmp_path):
    with pytest.raises(StackError, match="cannot run"):
        _daemon(tmp_path).start(["/nonexistent/binary"])


def test_wait_until_names_what_it_waited_for():
    with pytest.raises(StackError, match="the impossible not ready"):
        wait_until(lambda: False, timeout=0.2, what="the impossible")


def test_free_port_is_bindable():
    import socket

    port = free_port()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))
