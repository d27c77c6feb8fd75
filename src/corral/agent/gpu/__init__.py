"""GPU discovery: NVML on real machines, a labelled fake for trying corral without GPUs."""
