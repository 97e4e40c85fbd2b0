"""The notes' reproduction suite: their experiments, training runs, claims and report. It checks gradients with the
verifier, the separate package `gradcheck` (verifier/), which never imports this one."""
