"""``python -m stylequery`` runs the CLI (and is what ``torchrun -m stylequery`` starts)."""

from stylequery.cli import app

if __name__ == "__main__":
    app()
