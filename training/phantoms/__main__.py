"""python -m training.phantoms (the guard keeps spawned pool workers from running the command again)."""

from .cli import main

if __name__ == "__main__":
    raise SystemExit(main())
