"""Loader workers survive a process-group SIGTERM but not their own process's shutdown."""

from __future__ import annotations

import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent(
    """
    import os, signal, subprocess, sys, time
    import torch
    from torch.utils.data import DataLoader, Dataset
    from sdod.train.stopping import (
        end_workers_at_exit, ignore_stop_signals, iter_with_stop_signals_blocked)

    class D(Dataset):
        def __len__(self): return 100
        def __getitem__(self, i): return torch.zeros(3)

    loader = DataLoader(D(), batch_size=4, num_workers=2, persistent_workers=True,
                        worker_init_fn=ignore_stop_signals)
    end_workers_at_exit()
    it = iter_with_stop_signals_blocked(loader)  # workers forked with SIGTERM held back
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # the main process stands in for the job
    # at once, while the workers may still be starting: to the whole group from another
    # process, as the operator sends it
    subprocess.run(["kill", "-TERM", "--", f"-{os.getpgid(0)}"], check=True)
    time.sleep(0.5)
    assert len(list(it)) == 25, "a worker died of the group SIGTERM"
    keep = [loader, it]  # workers still alive at exit: multiprocessing terminate()s them
    print("done", flush=True)
    """
)


def test_workers_ignore_group_sigterm_and_still_end_at_exit() -> None:
    run = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        capture_output=True,
        text=True,
        timeout=120,
        start_new_session=True,  # its own process group to signal
    )
    assert run.returncode == 0 and "done" in run.stdout, run.stderr
