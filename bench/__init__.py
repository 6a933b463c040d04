"""Same-run speed and memory ratios against the reference implementations (not tests; see README.md)."""
