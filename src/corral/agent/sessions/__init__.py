"""Sessions into a running replica (dev pods, debugging a job): see README.md."""
