"""``python -m phonelabel``, and what torchrun runs: ``torchrun --nproc-per-node N -m
phonelabel train STORE --out MODEL``."""

from phonelabel.cli import main

if __name__ == "__main__":
    main()
