"""Jobs: the headless session that queues and runs generations (no UI toolkit here)."""
