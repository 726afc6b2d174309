"""Output files (-o) and Ctrl-C: links, FIFOs, devices, modes, failures and interrupts."""
from __future__ import annotations

import errno
import json
import os
import signal
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from eplb import EplbError
from eplb._io import write_file
from eplb.cli import main

ROOT = Path(__file__).resolve().parents[1]
SMALL = ["--nodes", "2", "--gpus-per-node", "2", "--slots", "24", "--groups", "4", "-q"]


@pytest.fixture
def loads(tmp_path):
    path = tmp_path / "w.npy"
    np.save(path, np.random.default_rng(0).gamma(1.0, size=(2, 16)) * 100 + 1)
    return str(path)


def place(capsys, loads, out):
    code = main(["place", "--loads", loads, *SMALL, "-o", str(out)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def leftovers(folder) -> list[str]:
    return [p for p in os.listdir(folder) if p.endswith(".tmp")]


def test_symlink_is_written_through(capsys, tmp_path, loads):
    target = tmp_path / "real.json"
    target.write_text("old")
    link = tmp_path / "link.json"
    link.symlink_to("real.json")
    code, _, err = place(capsys, loads, link)
    assert code == 0, err
    assert link.is_symlink() and os.readlink(link) == "real.json"
    assert json.loads(target.read_text())["format"] == "eplb.placement/v1"
    assert leftovers(tmp_path) == []


def test_dangling_symlink_creates_its_target(capsys, tmp_path, loads):
    link = tmp_path / "link.json"
    link.symlink_to("made.json")
    code, _, err = place(capsys, loads, link)
    assert code == 0, err
    assert link.is_symlink() and (tmp_path / "made.json").is_file()
    assert json.loads(link.read_text())["format"] == "eplb.placement/v1"


def test_fifo_is_written_straight_through(capsys, tmp_path, loads):
    fifo = tmp_path / "pipe.json"
    os.mkfifo(fifo)
    got = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_bytes()), daemon=True)
    reader.start()
    code, _, err = place(capsys, loads, fifo)
    reader.join(timeout=30)
    assert code == 0, err
    assert json.loads(got[0])["format"] == "eplb.placement/v1"
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode) and leftovers(tmp_path) == []


def test_character_device_stays_a_device(capsys, tmp_path, loads):
    if os.geteuid() == 0:  # a device node of our own, so that a regression cannot replace /dev/null
        dev = tmp_path / "null"
        try:
            os.mknod(dev, 0o666 | stat.S_IFCHR, os.makedev(1, 3))
        except PermissionError:
            pytest.skip("root without the right to make device nodes (a container); /dev/null is not risked")
    else:  # not root: /dev cannot be written, so /dev/null itself is safe to name
        dev = Path(os.devnull)
    before = os.stat(dev)
    code, _, err = place(capsys, loads, dev)
    assert code == 0, err
    after = os.stat(dev)
    assert stat.S_ISCHR(after.st_mode) and after.st_rdev == before.st_rdev and after.st_ino == before.st_ino
    assert leftovers(tmp_path) == []


def test_existing_mode_kept_and_umask_honoured(capsys, tmp_path, loads):
    old = tmp_path / "old.json"
    old.write_text("old")
    old.chmod(0o600)
    previous = os.umask(0o027)
    try:
        assert place(capsys, loads, old)[0] == 0
        assert place(capsys, loads, tmp_path / "new.json")[0] == 0
    finally:
        os.umask(previous)
    assert stat.S_IMODE(os.stat(old).st_mode) == 0o600 and old.read_text() != "old"
    assert stat.S_IMODE(os.stat(tmp_path / "new.json").st_mode) == 0o640


def test_failed_write_keeps_old_file_and_names_the_users_path(capsys, tmp_path, loads, monkeypatch):
    out = tmp_path / "out.json"
    out.write_text("old")

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    code, stdout, err = place(capsys, loads, out)
    assert code == 2 and stdout == ""
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert f"cannot write {out}: no space left on device" in err and ".tmp" not in err
    assert out.read_text() == "old" and leftovers(tmp_path) == []


def test_folder_as_output_is_one_line_exit_2(capsys, tmp_path, loads):
    code, stdout, err = place(capsys, loads, tmp_path)
    assert code == 2 and stdout == ""
    assert err.strip() == f"eplb place: error: {tmp_path} is a folder; give a file name to write to"
    with pytest.raises(EplbError, match="is a folder"):
        write_file(tmp_path, "x")


def test_missing_folder_and_long_names(capsys, tmp_path, loads):
    code, _, err = place(capsys, loads, tmp_path / "nowhere" / "out.json")
    assert code == 2 and err.count("\n") == 1 and "folder" in err and "nowhere" in err
    long = tmp_path / ("a" * 250)  # fits a file system's 255-byte names; the temporary file must fit too
    write_file(long, b"\x00\x01")
    assert long.read_bytes() == b"\x00\x01" and leftovers(tmp_path) == []


def test_every_command_turns_ctrl_c_into_one_line_and_130(capsys, monkeypatch):
    import eplb.cli as cli

    real = cli.build_parser

    def parser_that_interrupts():
        parser = real()
        parse = parser.parse_args

        def parse_args(argv=None):
            args = parse(argv)
            args.func = lambda _: (_ for _ in ()).throw(KeyboardInterrupt())
            return args

        parser.parse_args = parse_args
        return parser

    monkeypatch.setattr(cli, "build_parser", parser_that_interrupts)
    for argv in (["place"], ["sweep"], ["cost"], ["bench"], ["report", "-o", "x.html"]):
        assert main(argv) == 130
        captured = capsys.readouterr()
        assert captured.err == f"eplb {argv[0]}: interrupted\n" and captured.out == ""


# -- sweep: arguments that make every row fail, and the output format --------------------------------------

def test_sweep_refuses_arguments_that_fail_every_row(capsys, tmp_path):
    out = tmp_path / "r.parquet"
    common = ["sweep", "--presets", "deepseek-v3-decode", "--workloads", "decode_in1000out1000", "--workers", "1"]
    for extra, phrase in ((["--layers", "0"], "--layers must be at least 1"),
                          (["--layers", "1", "--methods", "migration"], "all 1 configurations failed"),
                          (["--layers", "1", "-o", str(tmp_path / "r.txt")], "*.parquet, *.csv, *.json")):
        code = main([*common, *extra, "-o", str(out)] if "-o" not in extra else [*common, *extra])
        err = capsys.readouterr().err
        lines = [line for line in err.splitlines() if "error:" in line]
        assert code == 2 and len(lines) == 1 and phrase in lines[0] and "Traceback" not in err
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("suffix", [".csv", ".json", ".parquet"])
def test_sweep_format_follows_the_suffix(capsys, tmp_path, suffix):
    import pandas as pd

    out = tmp_path / f"r{suffix}"
    code = main(["sweep", "--presets", "deepseek-v3-decode", "--workloads", "decode_in1000out1000", "--layers", "1",
                 "--workers", "1", "-o", str(out)])
    assert code == 0, capsys.readouterr().err
    df = {".csv": pd.read_csv, ".json": pd.read_json, ".parquet": pd.read_parquet}[suffix](out)
    assert len(df) == 1 and df["method"].iloc[0] == "deepseek" and df["num_layers"].iloc[0] == 1


# -- Ctrl-C for real: a subprocess interrupted in the middle of its work -----------------------------------

def _children(pid: int) -> list[int]:
    kids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as fh:
                    if int(fh.read().rsplit(")", 1)[1].split()[1]) == pid:
                        kids.append(int(entry))
            except (OSError, IndexError, ValueError):
                pass
    return kids


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _interrupt(cwd: Path, argv: list[str], ready) -> tuple[subprocess.CompletedProcess, list[int]]:
    """Start ``eplb argv`` in ``cwd``, call ``ready(proc)`` until the job is under way, send SIGINT and
    return the finished process and the worker processes it had at that moment."""
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen([sys.executable, "-m", "eplb", *argv], cwd=cwd, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        ready(proc)
        kids = _children(proc.pid)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    return subprocess.CompletedProcess(argv, proc.returncode, out, err), kids


def _assert_interrupted(done, command: str, cwd: Path, kids: list[int]) -> None:
    assert done.returncode == 130, done.stderr
    assert "Traceback" not in done.stderr
    assert done.stderr.splitlines()[-1] == f"eplb {command}: interrupted"
    assert [line for line in done.stderr.splitlines() if line.startswith(f"eplb {command}:")][-1:] == \
           [f"eplb {command}: interrupted"]
    assert [p for p in os.listdir(cwd) if p != "in.json"] == []  # no output, no temporary file
    deadline = time.monotonic() + 10
    while any(_alive(k) for k in kids) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(_alive(k) for k in kids), "worker processes outlived the interrupted command"


@pytest.mark.skipif(not os.path.isdir("/proc") or sys.platform != "linux", reason="reads /proc to find workers")
def test_ctrl_c_stops_a_sweep_and_its_worker_processes(tmp_path):
    def ready(proc):  # the sweep announces its configurations just before starting the pool
        line = proc.stderr.readline()
        assert "configurations on 2 local process(es)" in line, line
        deadline = time.monotonic() + 30
        while len(_children(proc.pid)) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(0.5)

    argv = ["sweep", "--presets", "deepseek-v3-decode", "--methods", "exact", "--time-limit", "1", "--layers", "8",
            "--workers", "2", "-o", "r.parquet"]
    done, kids = _interrupt(tmp_path, argv, ready)
    _assert_interrupted(done, "sweep", tmp_path, kids)
    assert len(kids) >= 2


@pytest.mark.skipif(sys.platform != "linux", reason="POSIX FIFO and signals")
def test_ctrl_c_stops_an_exact_placement(tmp_path):
    fifo = tmp_path / "in.json"
    os.mkfifo(fifo)
    a = np.random.default_rng(0).gamma(0.3, size=(40, 256)) * 1000 + 1

    def ready(proc):  # the command opens its --loads FIFO only once it runs: feed it, then let it search
        deadline = time.monotonic() + 60
        while True:  # a non-blocking open fails until the command opens its end (never hang the suite)
            try:
                fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
                break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline, "the command never read its --loads FIFO"
                time.sleep(0.05)
        os.set_blocking(fd, True)
        with os.fdopen(fd, "w") as fh:
            fh.write(json.dumps({"loads": a.round().tolist()}))
        time.sleep(1.5)

    argv = ["place", "--loads", "in.json", "--method", "exact", "--nodes", "4", "--gpus-per-node", "8",
            "--slots-per-gpu", "9", "--time-limit", "1", "-o", "p.json"]
    done, kids = _interrupt(tmp_path, argv, ready)
    _assert_interrupted(done, "place", tmp_path, kids)
