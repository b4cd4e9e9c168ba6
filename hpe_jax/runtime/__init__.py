"""Run-time infrastructure under every tool: the command line's error style and quiet logs
(`cli`), the CPU's devices and convolution library (`cpu`), and the persistent compilation and
traced-step caches (`compile_cache`, `trace_cache`). Imports nothing of the layers above."""
