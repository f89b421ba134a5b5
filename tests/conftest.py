"""Shared helpers: run the real `dlcli` (in this process, or in a subprocess where the process is the point), compose configs, find the MNIST files."""

import hashlib
import json
import os
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
# what a dlcli run writes where it runs; a test that writes any of it into the repository is wrong
RUN_FILES = {
    "outputs",
    "multirun",
    "data",
    "dlcli-cache",
    ".hydra",
    ".lock",
    ".log",
    ".pt",
    ".json",
    ".jsonl",
    ".csv",
    ".png",
}
FAST_TOY = ["trainer.epochs=2", "data.n_samples=600", "model.width=32", "trainer.progress=false"]


# hypothesis keeps its example database and caches in the working directory, the repository: not there
os.environ.setdefault("HYPOTHESIS_STORAGE_DIRECTORY", tempfile.mkdtemp(prefix="dlcli-hypothesis-"))


@pytest.fixture(scope="session", autouse=True)
def repository_untouched():
    """Every test runs dlcli in a temporary folder; none leaves run files in the repository."""
    started = time.time()
    yield
    if not (REPO / ".git").exists():
        return
    listed = subprocess.run(
        ["git", "status", "--porcelain", "--ignored", "--untracked-files=all"], cwd=REPO, capture_output=True, text=True
    ).stdout.splitlines()
    paths = [Path(line[3:]) for line in listed if line[:2] in ("??", "!!")]
    written = [
        str(p)
        for p in paths
        if RUN_FILES & {*p.parts, p.suffix} and (REPO / p).exists() and (REPO / p).stat().st_mtime >= started
    ]
    assert not written, f"tests wrote into the repository: {written[:10]}"


# Hostile-input tests register here what must never happen: a payload's marker file appearing, or a
# folder that dlcli did not make changing. Both are checked once more after the whole suite.
_MARKERS: list[Path] = []
_FOREIGN: dict[Path, dict] = {}


def snapshot(folder: Path) -> dict:
    """Every entry under `folder`, byte for byte: files by content and mode, links by target, the rest by kind."""
    if not os.path.lexists(folder):
        return {".": ("missing",)}
    found, paths = {}, [folder]
    for parent, dirs, names in os.walk(folder):  # links are not followed: a loop is an entry like any other
        paths += [Path(parent, name) for name in dirs + names]
    for path in sorted(paths):
        info = path.lstat()
        if stat.S_ISLNK(info.st_mode):
            found[str(path.relative_to(folder))] = ("link", os.readlink(path))
        elif stat.S_ISREG(info.st_mode):
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
            found[str(path.relative_to(folder))] = ("file", digest, info.st_mode, info.st_mtime_ns)
        else:
            found[str(path.relative_to(folder))] = ("dir" if stat.S_ISDIR(info.st_mode) else "other", info.st_mode)
    return found


@pytest.fixture
def marker():
    """marker(path): a file a crafted payload would create; it must never exist, now or after the suite."""

    def register(path: Path) -> Path:
        _MARKERS.append(Path(path))
        return Path(path)

    return register


@pytest.fixture
def foreign():
    """foreign(folder): a folder dlcli did not make; returns a check that it is byte for byte as it was,
    which runs again after the suite."""

    def register(folder: Path):
        folder = Path(folder)
        _FOREIGN[folder] = snapshot(folder)

        def unchanged() -> None:
            assert snapshot(folder) == _FOREIGN[folder], f"{folder} changed"

        return unchanged

    return register


@pytest.fixture(scope="session", autouse=True)
def nothing_ran_nothing_lost():
    yield
    ran = [str(m) for m in _MARKERS if os.path.lexists(m)]
    assert not ran, f"crafted payloads ran: {ran}"
    changed = [str(f) for f, before in _FOREIGN.items() if snapshot(f) != before]
    assert not changed, f"folders dlcli did not make were changed: {changed}"


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("dlcli-cache")


def dlcli_env(cache_dir: Path, **extra: str) -> dict:
    """The environment tests run dlcli in: the session's data cache, unbuffered output, and no debug
    switch from the developer's shell (it would turn one-line errors into tracebacks)."""
    env = {**os.environ, "DLCLI_CACHE": str(cache_dir), "PYTHONUNBUFFERED": "1", **extra}
    for key in ("DLCLI_DEBUG", "HYDRA_FULL_ERROR"):
        env.pop(key, None)
    return env


def start_dlcli(args: list[str], cwd: Path, env: dict) -> subprocess.Popen:
    """`dlcli ARGS` started, not waited for: for the tests that signal, stop or race it."""
    return subprocess.Popen(
        [sys.executable, "-m", "dlcli.cli", *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for(proc: subprocess.Popen, text: str) -> None:
    """Read a started dlcli's output until a line holds `text`."""
    for line in proc.stdout:
        if text in line:
            return
    raise AssertionError(f"never printed {text!r}: {proc.stderr.read()[-2000:]}")


def run_in_process(args: list[str], cwd: Path, env: dict) -> subprocess.CompletedProcess:
    """`dlcli ARGS` called in this process, as `python -m dlcli` would run it, and everything it may
    change put back: the folder, the environment, sys.argv and sys.path, the modules of the user's
    own files it imported, the run folders it holds, torch's threads and default dtype, the logging Hydra set up, and Hydra's global state. It
    saves the second or two a new process spends importing torch and Hydra."""
    import contextlib
    import io
    import logging
    import traceback

    import torch
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig

    from dlcli.cli import main
    from dlcli.files import release_all

    saved_env, saved_argv, saved_path, saved_modules = (
        dict(os.environ),
        list(sys.argv),
        list(sys.path),
        set(sys.modules),
    )
    loggers = [logging.getLogger(name) for name in ("", "dlcli", "hydra")]
    saved_logging = [(lg, list(lg.handlers), lg.level, lg.propagate) for lg in loggers]
    threads, dtype, here = torch.get_num_threads(), torch.get_default_dtype(), os.getcwd()
    torch.set_default_dtype(torch.float32)  # as a new process starts
    out, err = io.StringIO(), io.StringIO()
    os.environ.clear()
    os.environ.update(env)
    os.chdir(cwd)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main(list(args))
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
                if isinstance(exc.code, str):
                    print(exc.code, file=sys.stderr)
            except BaseException:  # as the interpreter would: the traceback on stderr, exit 1
                traceback.print_exc()
                code = 1
    finally:
        os.chdir(here)
        os.environ.clear()
        os.environ.update(saved_env)
        sys.argv[:], sys.path[:] = saved_argv, saved_path
        for name in set(sys.modules) - saved_modules:  # a user's my_nets.py: the next test has its own
            file = getattr(sys.modules[name], "__file__", None) or ""
            if not file.startswith((sys.prefix, sys.base_prefix, str(REPO))):
                del sys.modules[name]
        for lg, handlers, level, propagate in saved_logging:
            lg.handlers[:], lg.level, lg.propagate = handlers, level, propagate
        release_all()  # the run folders' locks, which the process's exit would drop
        torch.set_num_threads(threads)
        torch.set_default_dtype(dtype)
        GlobalHydra.instance().clear()
        HydraConfig.instance().cfg = None
        if "joblib" in sys.modules:  # the joblib launcher's workers outlive the command, in the folder it ran in
            from joblib.externals.loky import get_reusable_executor

            get_reusable_executor().shutdown(wait=True)
    return subprocess.CompletedProcess(["dlcli", *args], code, out.getvalue(), err.getvalue())


@pytest.fixture
def dlcli(tmp_path, cache_dir):
    """Run `dlcli ARGS` in tmp_path; returns the CompletedProcess. In this process unless the test
    is about the process itself (process=True: exit codes from signals, what it imports, hangs) or
    runs it on another Python path (env with PYTHONPATH)."""

    def run(*args: str, cwd: Path | None = None, env: dict | None = None, timeout: float = 300, process: bool = False):
        environment = dlcli_env(cache_dir, **(env or {}))
        if not process and "PYTHONPATH" not in (env or {}):
            return run_in_process(list(args), cwd or tmp_path, environment)
        return subprocess.run(
            [sys.executable, "-m", "dlcli.cli", *args],
            cwd=cwd or tmp_path,
            env=environment,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    return run


@pytest.fixture(scope="session")
def toy_checkpoint(tmp_path_factory, cache_dir) -> Path:
    """last.pt of a finished toy run, for tests that read it or derive damaged and crafted ones from it."""
    where = tmp_path_factory.mktemp("ckpt")
    env = {**os.environ, "DLCLI_CACHE": str(cache_dir)}
    subprocess.run(
        [sys.executable, "-m", "dlcli.cli", "train", *FAST_TOY, "hydra.run.dir=run"],
        cwd=where,
        env=env,
        check=True,
        capture_output=True,
    )
    return where / "run" / "checkpoints" / "last.pt"


@pytest.fixture(scope="session")
def mnist_root() -> Path:
    """The real MNIST files; missing files fail the run on CI instead of skipping silently."""
    root = Path(os.environ.get("DLCLI_DATA", SHARED_DATA))
    if not (root / "MNIST" / "raw" / "train-images-idx3-ubyte").is_file():
        message = f"MNIST files not found in {root}/MNIST/raw (set DLCLI_DATA)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return root


@pytest.fixture(scope="session")
def lenet_run(tmp_path_factory, mnist_root, cache_dir) -> Path:
    """The folder of a LeNet-5 trained briefly on an MNIST subset (97.4% test accuracy when measured),
    for the tests that evaluate, predict with or export a real model."""
    where = tmp_path_factory.mktemp("lenet")
    env = {**os.environ, "DLCLI_CACHE": str(cache_dir)}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "dlcli.cli",
            "train",
            "model=lenet",
            f"data.root={mnist_root}",
            "data.subset=10000",
            "trainer.batch_size=32",
            "optimizer.lr=0.003",
            "trainer.epochs=2",
            "trainer.progress=false",
            "data.download=false",
            "hydra.run.dir=run",
        ],
        cwd=where,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    return where / "run"


def run_dir_of(parent: Path) -> Path:
    """The single run directory dlcli made under parent/outputs."""
    dirs = [p.parent for p in (parent / "outputs").rglob(".hydra")]
    assert len(dirs) == 1, dirs
    return dirs[0]


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def assert_one_line_error(proc, *needles: str) -> None:
    """Bad input: non-zero exit, no traceback, and one line that names the problem."""
    assert proc.returncode != 0, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


def write_images(root: Path, per_class: int, size: int = 16, copies: int = 1, seed: int = 0) -> Path:
    """Two classes of binary PPM images (fast to write and decode), class b brighter; `copies` writes
    each image that many times under other names: more data, the same images."""
    import numpy as np

    rng = np.random.default_rng(seed)
    for k, name in enumerate("ab"):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            pixels = rng.integers(0, 160, (size, size, 3), dtype=np.uint8) + np.uint8(60 * k)
            blob = b"P6\n%d %d\n255\n" % (size, size) + pixels.tobytes()
            for c in range(copies):
                (root / name / f"{i}-{c}.ppm").write_bytes(blob)
    return root
