"""Run every benchmark in turn (make bench)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).parent

# bench_links.py needs root (it mounts an XFS image); run it by hand. bench_image.py and
# bench_serving.py start their own dockerd / servers and load generators (root, hey);
# bench_deploy.py its own dockerd, registry and nginx (root; about 5 minutes). The monitoring
# benchmarks against Evidently need `pip install evidently` (not a dependency); bench_monitor_check
# takes about 10 minutes (Evidently's run on a million rows).
for script in ("bench_startup.py", "bench_noop_run.py", "bench_demo.py",
               "bench_data_transfer.py", "bench_registry.py", "bench_serving.py",
               "bench_image.py", "bench_deploy.py", "bench_monitor_serving.py",
               "bench_monitor_read.py", "bench_monitor_check.py"):
    print(f"== {script}", flush=True)
    subprocess.run([sys.executable, str(HERE / script)], cwd=HERE, check=True)
