"""`python -m benchmarks`: run every benchmark and print one table (see benchmarks/run_all.py)."""

from __future__ import annotations

from benchmarks.run_all import main

raise SystemExit(main())
