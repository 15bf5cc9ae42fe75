"""Files that `mypy --strict` checks and pytest never runs: what the type checker must refuse."""
