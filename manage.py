#!/usr/bin/env python
"""Django's command-line utility for ModelPress."""

import os
import sys
from pathlib import Path


def main() -> None:
    root = Path(__file__).resolve().parent
    # platform/ and workers/ are source roots (see DESIGN.md); make them importable even
    # when the project is not installed in editable mode.
    for source_root in ("platform", "workers"):
        path = str(root / source_root)
        if path not in sys.path:
            sys.path.insert(0, path)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
