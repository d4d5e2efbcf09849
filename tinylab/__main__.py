"""``python -m tinylab`` (also what ``torchrun -m tinylab ...`` runs)."""
from tinylab.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
