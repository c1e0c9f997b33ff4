"""Performance: `cnnkit bench` (`perf/bench.py`) and the machine line every benchmark prints (`perf/machine.py`)."""
