"""Game-day safety: stop conditions, the dead man's switch (a watchdog process) and target locks."""
