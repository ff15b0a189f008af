import sys

from edgesep.cli import main

sys.exit(main())
