"""Real serving stacks started on this machine as planlab's live target (`--stack NAME`)."""
