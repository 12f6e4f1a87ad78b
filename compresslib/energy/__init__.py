"""Cost devices for ECC: analytic energy, measured latency/NVML energy, profiling, bilinear estimator."""
