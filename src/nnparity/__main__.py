import sys

from nnparity.cli import main

sys.exit(main())
