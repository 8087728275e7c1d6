"""Entry point of the bundled app: `mneme` with the CLI's commands (and the app with no command)."""

import multiprocessing
import sys

if __name__ == "__main__":
    multiprocessing.freeze_support()
    from mneme.app.cli import main

    sys.exit(main())
