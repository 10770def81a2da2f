"""Load generation: Locust as a child process, records tailed back into the run."""
