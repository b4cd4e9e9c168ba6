"""Experiment drivers: the top of the library, above training, evaluation and export.

`demo` (the staged demo / reproduction with its report), `ablation` (the paper's Tables 3 and 4,
one run per row) and `benchmarking` (throughput, compile time, FLOPs and MFU of the steps). They
import everything below them; nothing below imports them. The command-line entry points are in
tools/.
"""
