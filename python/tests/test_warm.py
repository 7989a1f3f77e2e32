"""Warm-up, locking and residency from Python: Model(warm=, lock=), Model.warm (progress, cancel,
a raising callback), Model.residency, Model.locked, warming on a thread while another predicts,
and a lock refused under a lowered RLIMIT_MEMLOCK (in a child process)."""

import os
import subprocess
import sys
import textwrap
import threading

import numpy as np
import pytest

import ple_runtime
from _util import full_spec, inputs_for
from ple_runtime import PleError, _native

try:
    _native.lib()
except ple_runtime.LibraryNotFound as exc:  # pragma: no cover - CI builds the library first
    pytest.skip(f"libple not found: {exc}", allow_module_level=True)

if not sys.platform.startswith("linux"):  # pragma: no cover
    pytest.skip("residency and locking are tested on Linux", allow_module_level=True)


@pytest.fixture(scope="module")
def spec():
    return full_spec(np.random.default_rng(21))


@pytest.fixture(scope="module")
def path(spec, tmp_path_factory):
    p = tmp_path_factory.mktemp("warm") / "full.ple"
    ple_runtime.write(spec, p)
    return p


def test_open_warm_and_lock(path):
    with ple_runtime.Model(path, warm=True) as m:
        r = m.residency()
        assert r["total_bytes"] == os.path.getsize(path)
        assert r["resident_bytes"] == r["total_bytes"]
        assert r["table_resident_bytes"] == r["table_bytes"] > 0
        assert not m.locked
    # The test models are a few KiB: within any RLIMIT_MEMLOCK.
    with ple_runtime.Model(path, lock=True) as m:
        assert m.locked
        assert m.residency()["resident_bytes"] == os.path.getsize(path)


def test_warm_progress_cancel_and_errors(path):
    with ple_runtime.Model(path) as m:
        seen = []
        m.warm(lambda done, total: seen.append((done, total)))
        size = os.path.getsize(path)
        assert seen[0] == (0, size) and seen[-1] == (size, size)

        with pytest.raises(PleError) as e:
            m.warm(lambda done, total: False)
        assert e.value.status_name == "PLE_STATUS_CANCELLED"
        assert "progress callback" in str(e.value)

        stop = threading.Event()
        stop.set()
        with pytest.raises(PleError) as e:
            m.warm(cancel=stop)
        assert e.value.status_name == "PLE_STATUS_CANCELLED"

        def boom(done, total):
            raise KeyError("from the callback")

        with pytest.raises(KeyError, match="from the callback"):
            m.warm(boom)
        m.warm()  # still usable
    with pytest.raises(ValueError, match="closed"):
        m.warm()
    with pytest.raises(ValueError, match="closed"):
        m.residency()
    assert not m.locked


def test_warm_on_a_thread_while_predicting(path, spec):
    x = inputs_for(spec, np.random.default_rng(5), batch=33)
    with ple_runtime.Model(path) as m:
        want = m.predict(x)
        errors = []

        def warm():
            try:
                for _ in range(50):
                    m.warm()
            except Exception as exc:  # pragma: no cover
                errors.append(exc)

        t = threading.Thread(target=warm)
        t.start()
        same = True
        while t.is_alive():
            same &= np.array_equal(m.predict(x), want)
        t.join()
        assert not errors and same


def test_lock_refused_names_rlimit_memlock(path):
    """In a child whose RLIMIT_MEMLOCK is 0 (and which cannot regain CAP_IPC_LOCK when root)."""
    code = textwrap.dedent(f"""
        import ple_runtime
        try:
            ple_runtime.Model({str(path)!r}, lock=True)
        except ple_runtime.PleError as e:
            print(e.status_name, e.detail)
        else:
            print("opened")
    """)

    def limit():
        import ctypes
        import resource
        resource.setrlimit(resource.RLIMIT_MEMLOCK, (0, 0))
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(24, 14, 0, 0, 0)  # PR_CAPBSET_DROP, CAP_IPC_LOCK (fails harmlessly if not root)

    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                         preexec_fn=limit, check=True).stdout
    assert out.startswith("PLE_STATUS_SYSTEM"), out
    assert "RLIMIT_MEMLOCK is 0 bytes" in out, out
