"""``python -m pipnet_lit.export``: the export command (`pipnet_lit.export.command`)."""

from pipnet_lit.export.command import main

if __name__ == "__main__":
    main()
