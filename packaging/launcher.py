"""The frozen bundle's entry point: ``wallet.cli.main`` and nothing else.

PyInstaller needs a script, not a console-script entry point. ``freeze_support``
lets a frozen ``multiprocessing`` child (spawn, Windows and macOS) run its target
instead of starting a second wallet.
"""

import multiprocessing
import sys

from wallet.cli import main

if __name__ == "__main__":
    multiprocessing.freeze_support()
    sys.exit(main())
