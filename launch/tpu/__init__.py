"""Cloud TPU launcher: create a slice, install the project on every worker, run, stream logs, tear down."""
